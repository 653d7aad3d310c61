"""The job indicator under the header, on every tab: what runs and waits now, and a notice when a job ends."""
from __future__ import annotations

import gradio as gr

from .tables import eta_text


def jobs_text(engine) -> str:
    """One line: each active run with its progress and ETA, or its place in the queue; empty when none."""
    parts = []
    for run in sorted(engine.active_runs(), key=lambda r: r.id):
        run = engine.get_run(run.id)  # with its queue position
        if run.queue_position:
            parts.append(f"run {run.id} · {run.kind} · queued ({run.queue_position})")
            continue
        eta = f" · {eta_text(run)}" if eta_text(run) else ""
        parts.append(f"run {run.id} · {run.kind} · {run.progress:.0%} · {run.stage}{eta}")
    return ("**Jobs:** " + " ｜ ".join(parts)) if parts else ""


def poll_s(text: str) -> float:
    return 5.0 if text else 15.0  # a poll costs the browser and the server a little CPU: seldom when idle


def build_job_indicator(engine) -> None:
    line = gr.Markdown("", visible=False, elem_id="jobs")  # filled on page load: the page is built only once
    seen = gr.State([])  # the active runs at the last poll of this browser session
    timer = gr.Timer(poll_s(""))

    def poll(before: list[int]):
        active = [r.id for r in engine.active_runs()]
        for run_id in before:
            if run_id not in active:
                run = engine.get_run(run_id)
                say = gr.Info if run.status.value == "succeeded" else gr.Warning
                say(f"Run {run.id} ({run.kind}) {run.status.value}.")
        now = jobs_text(engine)
        return gr.update(value=now, visible=bool(now)), active, gr.Timer(poll_s(now))

    timer.tick(poll, [seen], [line, seen, timer], show_progress="hidden")
    gr.on(None, poll, [seen], [line, seen, timer], show_progress="hidden")  # no triggers: on page load
