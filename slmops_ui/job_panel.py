"""The shared widget of every job tab: status, progress with ETA, live loss chart, cancel and resume."""
from __future__ import annotations

import gradio as gr

from engine import JOB_KINDS

from .charts import loss_figure
from .forms import ui_errors
from .navigation import next_buttons, steps_for
from .tables import eta_text


def status_markdown(engine, run_id, made: list | None = None) -> str:
    """The run's status, figures and the models it made (`made`: models_made(), already read by the caller, else
    read here)."""
    if not run_id:
        return "No run started from this tab yet."
    run = engine.get_run(int(run_id))
    eta = f" · {eta_text(run)}" if eta_text(run) else ""
    speed = [m.value for m in engine.run_metrics(run.id) if m.name == "train_tokens_per_s"]
    speed_text = f" · {speed[-1]:.0f} train tokens/s" if speed else ""
    text = (f"**Run {run.id}** · {run.status.value} · {run.progress:.0%} · {run.stage}{eta}{speed_text}")
    if run.queue_position:
        slots = engine.settings.max_parallel_jobs
        text += (f"\n\n**Waiting in the queue: position {run.queue_position}.** {slots} training/export/benchmark "
                 f"job{'s run' if slots > 1 else ' runs'} at a time (`SLMOPS_MAX_JOBS`); it starts by itself when "
                 "the one before it ends, even if you close this page.")
    if run.error:  # a cancelled run's "error" says how it stopped (e.g. "stopped by SIGTERM"): not an error
        text += f"\n\n**{'Cancelled' if run.status.value == 'cancelled' else 'Error'}:** {run.error}"
    if run.summary:
        text += "\n\n" + summary_line(run.kind, run.summary) + task_line(run.summary)
        text += comparison_table(run.summary)
        text += results_lines(run.summary.get("results"))
    made = models_made(engine, run) if made is None else made
    chosen = made_model(engine, run, made)
    if chosen is not None:
        text += (f"\n\n**Made `{chosen.id}`.**" if len(made) == 1 else
                 f"\n\n**Made {len(made)} models:** {', '.join(f'`{m.id}`' for m in made)}. The buttons below "
                 f"take `{chosen.id}`.")
        text += f" Next steps: the buttons below · every detail: **Runs** → run {run.id}."
    return text


def models_made(engine, run) -> list:
    """The models a succeeded run registered, in order; [] for any other run."""
    if run is None or run.status.value != "succeeded":
        return []
    return [m for m in engine.list_models() if m.run_id == run.id]


def made_model(engine, run, made: list | None = None):
    """The model the next-step buttons take: the one the run's summary picks (a size sweep's smallest student that
    keeps 90 % of the task), else the last it registered (e.g. a fine-tune's merged copy); None when it made none.
    `made`: models_made(), when the caller has it."""
    made = models_made(engine, run) if made is None else made
    picked = [m for m in made if run is not None and m.id == run.summary.get("smallest_at_90")]
    return (picked or made or [None])[-1]


# Labels of the figures a job records beside the ones its kind declares for the summary line (the registry's)
FIGURES = {"trainable_pct": "trainable parameters (%)", "train_examples": "training examples",
           "world_size": "processes", "train_s": "training time (s)", "steps": "optimizer steps",
           "train_loss": "mean training loss", "train_tokens_per_s": "training tokens/s", "backend": "ran on",
           "prompts": "prompts", "importance_rounds": "layer-importance rounds", "alpha": "KD weight α",
           "teacher_tail_mass": "teacher's probability outside its top-k", "ppl_retention": "perplexity retention",
           "agreement": "greedy agreement with the teacher", "task": "task", "scorer": "scorer", "passed": "passed",
           "fit": "weight fit", "ppl": "perplexity", "max_ppl_ratio": "perplexity bound (× source)",
           "task_retention": "task retention (export ÷ source)", "models": "models", "chosen": "chosen variant"}


def figure_label(key: str) -> str:
    """A recorded figure's name in words: the label above, `dropped_<why>` as "dropped (<why>)", else the key with
    spaces."""
    if key in FIGURES:
        return FIGURES[key]
    if key.startswith("dropped_"):
        return f"dropped ({key[len('dropped_'):].replace('_', ' ')})"
    return key.replace("_", " ")


def summary_line(kind: str, summary: dict) -> str:
    """The figures the job kind declares (engine/jobs/registry.py) with their labels in bold, then the other scalar
    figures with theirs (lists, and the teacher/student or source/export pairs, get their own tables)."""
    declared = JOB_KINDS[kind].summary if kind in JOB_KINDS else ()
    parts = [f"{label}: **{summary[key]}**" for key, label in declared if summary.get(key) is not None]
    named = {key for key, _ in declared}
    parts += [f"{figure_label(k)}: {v}" for k, v in summary.items()
              if k not in named and v is not None and not isinstance(v, (list, dict)) and not paired(k)]
    return " · ".join(parts)


def paired(key: str) -> bool:
    """A teacher/student or source/export figure (comparison_table and task_line show them side by side)."""
    return key.endswith(("_teacher", "_student", "_source", "_export")) or key in ("teacher_params_m",
                                                                                  "student_params_m")


def task_line(summary: dict) -> str:
    """An export verified on a task: the source's score and the export's, each with its 95 % interval."""
    if "task_score_source" not in summary or "task_score_export" not in summary:
        return ""
    return "\n\nTask score, 95 % interval: " + " → ".join(
        f"{who} **{summary[f'task_score_{who}']:.3f}** ({summary.get(f'task_ci_low_{who}', 0):.3f}–"
        f"{summary.get(f'task_ci_high_{who}', 0):.3f})" for who in ("source", "export"))


def results_lines(rows) -> str:
    """A line per model a benchmark has measured so far (its charts are drawn when the run ends)."""
    if not isinstance(rows, list) or not rows:
        return ""
    lines = []
    for r in rows:
        if not isinstance(r, dict) or r.get("decode_tok_s") is None:
            continue
        if r.get("decode_tok_s_low") is not None:
            parts = [f"decode {r['decode_tok_s']:.1f} tok/s ({r['decode_tok_s_low']:.1f}–{r['decode_tok_s_high']:.1f})"]
        else:
            parts = [f"decode {r['decode_tok_s']:.1f} ± {r.get('decode_tok_s_std') or 0:.1f} tok/s"]
        if r.get("ppl") is not None:
            parts.append(f"perplexity {r['ppl']:.3f}")
        if r.get("mc_accuracy") is not None:
            parts.append(f"MC {r['mc_accuracy']:.1%}")
        if r.get("task_score") is not None:
            parts.append(f"task {r['task']} {r['task_score']:.1%} ({r['task_ci_low']:.0%}–{r['task_ci_high']:.0%})")
        lines.append(f"- **{r.get('model_id')}**: " + ", ".join(parts))
    return "\n\n" + "\n".join(lines) if lines else ""


LABELS = {"params_m": "parameters (M)", "heldout_ppl": "perplexity of held-out teacher answers",
          "general_ppl": "perplexity on Python's docs", "decode_tok_s": "decode tokens/s"}


def comparison_table(summary: dict) -> str:
    """Teacher and student side by side, for the `<metric>_teacher` / `<metric>_student` pairs of a run."""
    names = [k[:-len("_teacher")] for k in summary if k.endswith("_teacher") and f"{k[:-8]}_student" in summary]
    if "teacher_params_m" in summary:
        names = ["params_m"] + names
    rows = []
    for name in names:
        t = summary.get(f"{name}_teacher", summary.get(f"teacher_{name}"))
        s = summary.get(f"{name}_student", summary.get(f"student_{name}"))
        if t is not None and s is not None:  # a size sweep has one teacher and a table of students instead
            rows.append(f"| {LABELS.get(name, name.replace('_', ' '))} | {t} | {s} |")
    return "\n".join(["", "", "| | teacher | student |", "|---|---:|---:|", *rows]) if rows else ""


def progress_bar(run) -> str:
    """The run's progress as a bar with its percentage (a read-only slider looked like something to drag)."""
    share = 0.0 if run is None else run.progress
    state = "idle" if run is None else run.status.value
    return (f'<div class="job-bar job-bar-{state}" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{100 * share:.0f}"><div style="width:{100 * share:.1f}%"></div>'
            f'<span>{100 * share:.0f} %</span></div>')


def build_job_panel(engine, run_state: gr.State, kinds: tuple[str, ...], continuable: bool = False,
                    chart: bool = True, poll_s: float = 2.0, belongs=None) -> gr.State:
    """Renders under a job form; `run_state` holds the id of the run this browser session started. Opening or
    reloading the page re-attaches the panel to the newest active run of `kinds` (jobs outlive the browser).
    *Resume* is offered when the kinds resume (the registry says); *Continue* (more epochs) when `continuable`.
    Returns a state that takes the run's id when this page saw the run end (its .change is where a tab offers the
    result, e.g. stage 1's dataset to stage 2). `belongs(run)`: which runs of `kinds` are this panel's (the Tune
    panel of a tab shows the studies over that tab's job); by default a study's trials are not (its panel shows
    them)."""
    belongs = belongs or (lambda run: run.parent_run_id is None)
    resumable = any(JOB_KINDS[k].resumable for k in kinds)
    status = gr.Markdown(status_markdown(engine, None), elem_classes=["job-status"])
    progress = gr.HTML(progress_bar(None), elem_classes=["job-progress"])
    made = gr.State(None)  # the id of the model the run made: the next-step buttons take it to another tab
    steps = next_buttons(made)
    plot = gr.Plot(label="Loss", visible=False)
    buttons = []  # (button, whether it applies to a run): each is enabled only when it can do something
    with gr.Row():
        cancel = gr.Button("Cancel run", variant="stop", interactive=False)
        buttons.append((cancel, lambda run: not run.status.final))
        if resumable:
            resume = gr.Button("Resume where it stopped", interactive=False)
            buttons.append((resume, lambda run: run.status.final and run.status.value != "succeeded"))
        if continuable:
            more_epochs = gr.Slider(0.5, 10, value=1, step=0.5, label="More epochs (to continue a finished run)")
            go_on = gr.Button("Continue finished run", interactive=False)
            buttons.append((go_on, lambda run: run.status.value == "succeeded"))
    timer = gr.Timer(poll_s, active=False)  # ticks only while this panel's run is active: idle pages cost no CPU

    finished = gr.State(None)

    def refresh(run_id, watched: bool = False):
        if not run_id:
            return (status_markdown(engine, None), progress_bar(None), gr.update(visible=False),
                    gr.Timer(active=False), gr.skip(), None, *(gr.update(visible=False) for _ in steps),
                    *(gr.update(interactive=False) for _ in buttons))
        run = engine.get_run(int(run_id))
        fig = loss_figure(engine.run_metrics(run.id), title=f"Run {run.id}: loss") if chart else None
        made = models_made(engine, run)  # read once a poll: the status and the buttons share it
        model = made_model(engine, run, made)
        shown = steps_for(model)
        return (status_markdown(engine, run.id, made), progress_bar(run),
                gr.update(value=fig, visible=fig is not None), gr.Timer(active=not run.status.final),
                run.id if watched and run.status.final else gr.skip(), model.id if model else None,
                *(gr.update(visible=tab_id in shown) for _, tab_id in steps),
                *(gr.update(interactive=bool(applies(run))) for _, applies in buttons))

    outputs = [status, progress, plot, timer, finished, made, *(step for step, _ in steps),
               *(button for button, _ in buttons)]

    def attach():
        """The tab's latest run: the newest active one, else the newest that ended (with its results)."""
        active = [r.id for r in engine.active_runs() if r.kind in kinds and belongs(r)]
        if active:
            return max(active)
        ended = [next((r.id for r in engine.list_runs(limit=20, kind=kind) if belongs(r)), None) for kind in kinds]
        ended = [i for i in ended if i is not None]
        return max(ended) if ended else gr.skip()

    gr.on(None, attach, None, [run_state], show_progress="hidden")  # triggers None, no inputs: on page load
    # `finished` takes a run only when this page saw it end (the timer ticks while it is active): a run that had
    # ended before the page opened offers nothing (its dataset would overwrite what the user has typed since)
    timer.tick(lambda run_id: refresh(run_id, watched=True), [run_state], outputs, show_progress="hidden")
    run_state.change(refresh, [run_state], outputs, show_progress="hidden")  # no overlay flicker in the status

    @ui_errors
    def do_cancel(run_id):
        if not run_id:
            raise gr.Error("No run to cancel.")
        engine.cancel_run(int(run_id))
        gr.Info(f"Run {run_id}: cancel requested; it stops at the next step and keeps a checkpoint.")

    cancel.click(do_cancel, [run_state], None)

    @ui_errors
    def do_resume(run_id, extra=None):
        if not run_id:
            raise gr.Error("No run to resume.")
        new_id = engine.resume_run(int(run_id), extra)
        gr.Info(f"Run {new_id} continues run {run_id}.")
        return new_id

    if resumable:
        resume.click(do_resume, [run_state], [run_state])
    if continuable:
        go_on.click(do_resume, [run_state, more_epochs], [run_state])
    return finished


def follow_run(engine, run_state: gr.State, component, render, empty, poll_s: float = 5.0):
    """Redraw `component` from the run in `run_state` — `render(run)`, or `empty` with no run — when the run changes
    and every `poll_s` while it is active (a sweep's chart, a set's results). Returns (show, timer) for other
    triggers of the same redraw."""
    def show(run_id):
        if not run_id:
            return empty, gr.Timer(active=False)
        run = engine.get_run(int(run_id))
        return render(run), gr.Timer(active=not run.status.final)

    timer = gr.Timer(poll_s, active=False)
    timer.tick(show, [run_state], [component, timer], show_progress="hidden")
    run_state.change(show, [run_state], [component, timer])
    return show, timer
