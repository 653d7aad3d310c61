"""Next steps under a finished run: buttons that open another tab with the model the run made already picked there
(chat with it, export it, score it, benchmark it). Job panels add their buttons while the tabs are built and the
tabs name their model pickers; build_app wires the two together once every tab exists (`connect`)."""
from __future__ import annotations

import gradio as gr

from engine import EXPORT_FORMATS

# (tab id, button label, whether an export (ONNX, GGUF) can go there: it is exported already)
STEPS = (("chat", "Chat with it", True), ("quantize", "Export it (Quantize)", False),
         ("evaluate", "Score it on a task", True), ("benchmark", "Benchmark it", True))


class Navigation:
    def __init__(self):
        self.buttons: list[tuple[gr.Button, str, gr.State]] = []  # (button, tab id, state with the model id)
        self.pickers: dict[str, tuple[gr.components.Component, bool]] = {}  # tab id → (picker, multiselect)


_building: Navigation | None = None  # the app being built (build_app sets it; a lone tab in a test has none)


def begin() -> Navigation:
    global _building
    _building = Navigation()
    return _building


def picker(tab_id: str, component, multiselect: bool = False) -> None:
    """The widget of a tab that a next-step button fills with the model's id."""
    if _building is not None:
        _building.pickers[tab_id] = (component, multiselect)


def steps_for(model) -> list[str]:
    """The tabs a finished run's model can go to next (an export is not exported again); [] without a model."""
    if model is None:
        return []
    export = model.format in EXPORT_FORMATS
    return [tab_id for tab_id, _, exports_too in STEPS if exports_too or not export]


def next_buttons(made: gr.State) -> list[tuple[gr.Button, str]]:
    """A row of next-step buttons for the model id in `made`; returns (button, tab id) pairs."""
    out = []
    with gr.Row(elem_classes=["next-steps"]):
        for tab_id, label, _ in STEPS:
            button = gr.Button(label, size="sm", visible=False, elem_classes=[f"next-{tab_id}"])
            if _building is not None:
                _building.buttons.append((button, tab_id, made))
            out.append((button, tab_id))
    return out


def connect(nav: Navigation, tabs: gr.Tabs, engine) -> None:
    """Each button: switch to its tab and pick the model there (the picker's choices refreshed to include it)."""
    global _building
    from .forms import model_choices

    _building = None
    for button, tab_id, made in nav.buttons:
        if tab_id not in nav.pickers:
            continue
        component, multiselect = nav.pickers[tab_id]

        def go(model_id, _tab=tab_id, _multi=multiselect):
            if not model_id:
                return gr.skip(), gr.skip()
            return gr.Tabs(selected=_tab), gr.update(choices=model_choices(engine),
                                                     value=[model_id] if _multi else model_id)

        button.click(go, [made], [tabs, component], show_progress="hidden")
