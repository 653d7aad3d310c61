"""The Gradio dashboard. Depends on the engine's public API, gradio and plotly; the engine never imports this."""
from .layout import build_app

__all__ = ["build_app"]
