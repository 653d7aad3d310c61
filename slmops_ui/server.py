"""How the app is served: the theme, an ASGI middleware that puts a script ahead of Gradio's modules, and the
queue's idle polling. app.py launches build_app's Blocks with these."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# System fonts only: the default theme would fetch web fonts, and the app must work with no internet.
THEME = gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])

# Gradio's status tracker announces `common.complete` to screen readers when an event with visible progress ends,
# and its English strings lack that key, so the key itself was read out; the app supplies the word.
I18N = gr.I18n(en={"common.complete": "Complete"})


class EarlyScript:
    """ASGI middleware that puts a script into every HTML page ahead of Gradio's own modules. (Gradio's `head=`
    is added by its JavaScript after those modules have run: too late for assets/quiet_frames.js, whose target
    keeps a reference to `requestAnimationFrame` taken when its module loads.)"""

    MARKER = b'<script type="module"'

    def __init__(self, app, script: str):
        self.app, self.tag = app, f"<script>{script}</script>".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        state: dict = {}

        async def rewrite(message):
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers") or []}
                state["html"] = (headers.get(b"content-type", b"").startswith(b"text/html")
                                 and b"content-encoding" not in headers)
                if not state["html"]:
                    return await send(message)
                state["start"], state["body"] = message, b""
                return None
            if not state.get("html") or message["type"] != "http.response.body":
                return await send(message)
            state["body"] += message.get("body", b"")
            if message.get("more_body"):
                return None
            body = state["body"].replace(self.MARKER, self.tag + self.MARKER, 1)
            start = state["start"]
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, rewrite)


def app_kwargs() -> dict:
    """FastAPI settings for launch(): the early script of EarlyScript (Gradio's idle status tracker asks for 5
    frames a second, not 60)."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(EarlyScript, script=(ASSETS / "quiet_frames.js").read_text())]}


def queued(app: gr.Blocks, concurrency: int = 4) -> gr.Blocks:
    """Gradio's queue, polling less while idle. Its event loop looks for new events every 1 ms and for progress
    every 10 ms when nothing is queued: 0.095 cores of an idle server (measured with py-spy), taken from whatever
    job runs beside it on a small machine. 20 ms / 100 ms keep clicks immediate to a person."""
    app.queue(default_concurrency_limit=concurrency)
    queue = getattr(app, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = 0.02
        queue.progress_update_sleep_when_free = 0.1
    return app
