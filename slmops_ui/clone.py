"""Cloning a run's config into the form of its tab: each job tab names which config field fills which widget."""
from __future__ import annotations

import re

import gradio as gr


def fill(form, clone: dict | None) -> list:
    """Updates for the form's widgets (in order) from a cloned config, or skips when it belongs to another form.
    Fields the stored config lacks (an older run) keep what the widget shows."""
    if not clone or clone.get("kind") not in form.kinds:
        return [gr.skip()] * len(form.widgets)
    config = clone["config"]
    return [gr.update(value=form.to_widget(name, config[name])) if name in config else gr.skip()
            for name in form.widgets]


def wire(clone_state: gr.State, forms: list) -> None:
    """When a run is cloned, fill every form (slmops_ui.forms.ConfigForm) whose kinds include the run's kind."""
    for form in forms:
        clone_state.change(lambda c, _f=form: fill(_f, c), [clone_state], form.inputs)


def restore_active(engine, loaded, forms: list) -> None:
    """After the page has loaded (`loaded`: its load event, which fills the model lists), a form whose job is
    running or queued shows that run's settings instead of its defaults: a reload keeps the context."""
    def latest(form):
        active = [r for r in engine.active_runs() if r.kind in form.kinds]
        if not active:
            return [gr.skip()] * len(form.widgets)
        run = max(active, key=lambda r: r.id)
        return fill(form, {"kind": run.kind, "config": run.config, "run": run.id})

    for form in forms:
        loaded.then(lambda _f=form: latest(_f), None, form.inputs, show_progress="hidden")


def fresh_name(engine, name: str) -> str:
    """`name` with the first free numeric suffix (-2, -3, …) — free for the model and its '-merged' twin."""
    stem = re.sub(r"-\d+$", "", name)
    n = 2
    while any(engine.store.has_model(f"{stem}-{n}{tail}") for tail in ("", "-merged")):
        n += 1
    return f"{stem}-{n}"


def build_clone_row(engine, clone_state: gr.State, tabs: gr.Tabs, tab_of_kind: dict[str, str]) -> dict:
    """Under the run history: pick a run, copy its config into the form of its tab (`tab_of_kind`: job kind → tab
    id) and switch to that tab."""
    from .forms import ui_errors

    with gr.Row():
        picked = gr.Dropdown(label="Clone a run's settings into its tab", choices=[], scale=3,
                             info="Fills the form of the run's tab with its config, to edit and start again.")
        button = gr.Button("Clone into its tab", scale=1, elem_id="clone-run")
    note = gr.Markdown("")

    def choices():
        return [(f"#{r.id} {r.kind} · {r.model_id or ''} ({r.status.value})", r.id)
                for r in engine.list_runs(limit=200) if r.kind in tab_of_kind]

    @ui_errors
    def do_clone(run_id):
        if not run_id:
            raise gr.Error("Pick a run to clone.")
        run = engine.get_run(int(run_id))
        tab = tab_of_kind[run.kind]
        config = dict(run.config)
        renamed = ""
        if config.get("output_name"):  # the old name is taken by the run's own model: propose a free one
            config["output_name"] = fresh_name(engine, config["output_name"])
            renamed = f" Output name: **{config['output_name']}** (run {run.id}'s name is taken)."
        return ({"kind": run.kind, "config": config, "run": run.id}, gr.Tabs(selected=tab),
                f"Copied run {run.id}'s {run.kind} settings into the {tab} tab.{renamed}")

    button.click(do_clone, [picked], [clone_state, tabs, note])
    def refresh(current):
        options = choices()
        return (gr.update(choices=options, value=current if current in [v for _, v in options] else None),)

    return {"refresh": (refresh, [picked], [picked])}
