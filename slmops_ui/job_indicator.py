"""The job indicator under the header, on every tab: what runs and waits now, and a notice when a job ends."""
from __future__ import annotations

import gradio as gr
import psutil

from .tables import eta_text


psutil.cpu_percent(None)  # the machine's CPU is measured from here to the first poll, then poll to poll
_processes: dict[int, object] = {}  # pid → psutil.Process, kept between polls: CPU % is measured since the last one
GIB = 1024 ** 3


def process_gauge(pid: int | None) -> str:
    """A job's worker (with its children, e.g. torchrun's ranks): CPU since the last poll (100 % = one core) and
    resident memory; empty when the process is gone."""
    try:
        proc = _processes.get(pid) or _processes.setdefault(pid, psutil.Process(pid))
        procs = [proc, *proc.children(recursive=True)]
        cpu = 0.0
        for p in procs:
            known = _processes.setdefault(p.pid, p)  # a child's first reading is 0: it counts from the next poll
            cpu += known.cpu_percent(None)
        rss = sum(p.memory_info().rss for p in procs)
    except (psutil.Error, TypeError, ValueError):
        _processes.pop(pid, None)
        return ""
    return f"CPU {cpu:.0f} % · {rss / GIB:.1f} GiB"


def machine_gauge() -> str:
    """The whole machine: CPU over all cores since the last call (the first call, at import, starts the count),
    memory in use of the total."""
    mem = psutil.virtual_memory()
    return (f"machine: CPU {psutil.cpu_percent(None):.0f} % of {psutil.cpu_count()} cores, memory "
            f"{(mem.total - mem.available) / GIB:.1f} of {mem.total / GIB:.1f} GiB")


def jobs_text(engine, active=None) -> str:
    """One line: each active run (`active`, else read now) with its progress, ETA and what its process uses (CPU,
    memory), or its place in the queue, then the machine's CPU and memory; empty when no job is active."""
    parts = []
    for run in sorted(engine.active_runs() if active is None else active, key=lambda r: r.id):
        run = engine.get_run(run.id)  # with its queue position
        if run.queue_position:
            parts.append(f"run {run.id} · {run.kind} · queued ({run.queue_position})")
            continue
        eta = f" · {eta_text(run)}" if eta_text(run) else ""
        gauge = process_gauge(run.pid) if run.pid else ""
        parts.append(f"run {run.id} · {run.kind} · {run.progress:.0%} · {run.stage}{eta}"
                     + (f" · {gauge}" if gauge else ""))
    if not parts:
        return ""
    return "**Jobs:** " + " | ".join(parts) + f" | {machine_gauge()}"


def poll_s(text: str) -> float:
    return 5.0 if text else 15.0  # a poll costs the browser and the server a little CPU: seldom when idle


def build_job_indicator(engine) -> tuple:
    """The line and its polling. Returns (refresh, outputs): another event (the banner's, when a preparation ends)
    redraws the line with it, so the two never disagree for a poll's length; the notices stay with the poll."""
    line = gr.Markdown("", visible=False, elem_id="jobs")  # filled on page load: the page is built only once
    seen = gr.State([])  # the active runs at the last poll of this browser session
    timer = gr.Timer(poll_s(""))

    def poll(before: list[int]):
        runs = engine.active_runs()
        active = [r.id for r in runs]
        for run_id in before:
            if run_id not in active:
                run = engine.get_run(run_id)
                say = gr.Info if run.status.value == "succeeded" else gr.Warning
                say(f"Run {run.id} ({run.kind}) {run.status.value}.")
        now = jobs_text(engine, runs)
        return gr.update(value=now, visible=bool(now)), active, gr.Timer(poll_s(now))

    timer.tick(poll, [seen], [line, seen, timer], show_progress="hidden")
    gr.on(None, poll, [seen], [line, seen, timer], show_progress="hidden")  # no triggers: on page load
    def refresh():
        now = jobs_text(engine)
        return gr.update(value=now, visible=bool(now)), gr.Timer(poll_s(now))

    return refresh, [line, timer]
