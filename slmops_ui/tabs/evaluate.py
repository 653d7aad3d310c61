"""Evaluate tab: score any model on a task (the bundled one, or one added with `python -m engine tasks add`): the
score with its 95 % interval, which backend answered, and every example — prompt, reference, answer, score —
filterable to the failures."""
from __future__ import annotations

import gradio as gr

from engine import EvaluateConfig

from ..forms import ConfigForm, model_choices, ui_errors
from .. import navigation
from ..job_panel import build_job_panel

HEADERS = ["#", "score", "answer", "reference", "prompt"]  # the answer first: it is what a user reads
COMPARE_HEADERS = ["#", "change", "earlier score", "this score", "earlier answer", "this answer", "reference",
                   "prompt"]


def example_rows(engine, run_id, failures_only: bool) -> list[list]:
    if not run_id:
        return []
    rows = engine.run_predictions(int(run_id))
    return [[r["n"], round(r["score"], 3), r["prediction"], r["reference"], r["prompt"]] for r in rows
            if not failures_only or r["score"] < 1.0]


def compare_rows(engine, earlier, run_id, changed_only: bool) -> list[list]:
    """This run's examples beside an earlier run's on the same task: which flipped (fixed / broken)."""
    rows = engine.compare_predictions(int(earlier), int(run_id))
    return [[r["n"], r["change"], round(r["score_a"], 3), round(r["score_b"], 3), r["prediction_a"],
             r["prediction_b"], r["reference"], r["prompt"]] for r in rows
            if not changed_only or r["change"] != "same"]


def comparable_runs(engine, run_id) -> list[tuple[str, int]]:
    """Finished evaluate runs of the same task as `run_id` (newest first), as dropdown choices."""
    if not run_id:
        return []
    task = engine.get_run(int(run_id)).config.get("task")
    return [(f"#{r.id} {r.config.get('model_id')} · {r.summary.get('score', 0):.3f}", r.id)
            for r in engine.list_runs(limit=200, kind="evaluate", status="succeeded")
            if r.id != int(run_id) and r.config.get("task") == task]


def build_evaluate_tab(engine) -> dict:
    run_state = gr.State(None)
    gr.Markdown("Does a model still do **your task**? Score it on a task's evaluation set (never trained on): "
                "greedy answers, each compared with its reference by the task's scorer, the mean with a 95 % "
                "interval. A full model or adapter answers on its fastest verified ONNX export when it has one "
                "(the result says which backend answered).")
    form = ConfigForm(EvaluateConfig, required={"model_id": "Pick a model and a task.",
                                                "task": "Pick a model and a task."})
    with gr.Row():
        model = form.field("model_id", gr.Dropdown(label="Model", choices=[], elem_id="eval-model"))
        navigation.picker("evaluate", model)
        task = form.field("task", gr.Dropdown(label="Task", choices=[], elem_id="eval-task",
                                              info="Add tasks with `python -m engine tasks add --config task.yaml`."))
        form.field("limit", label="Examples (0: all)")
        form.field("backend", elem_id="eval-backend")
        form.field("threads")
    start = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("evaluate",), chart=False)
    with gr.Row():
        failures = gr.Checkbox(value=False, label="Failures only (comparing: changed only)")
        earlier = gr.Dropdown(label="Compare with another run of this task", choices=[], elem_id="eval-compare",
                              info="The same examples side by side: which ones this run fixed or broke.")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="eval-examples",
                         column_widths=["5%", "8%", "31%", "31%", "25%"])

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(form.config(values))
        return run_id, f"Started run {run_id}."

    start.click(do_start, form.inputs, [run_state, message])
    timer = gr.Timer(3.0, active=False)

    def show(run_id, failures_only, other=None):
        final = not run_id or engine.get_run(int(run_id)).status.final
        if run_id and other and final:
            rows = compare_rows(engine, other, run_id, failures_only)
            table_ = gr.update(value={"headers": COMPARE_HEADERS, "data": rows},
                               column_widths=["4%", "7%", "6%", "6%", "20%", "20%", "20%", "17%"])
        else:
            table_ = gr.update(value={"headers": HEADERS, "data": example_rows(engine, run_id, failures_only)},
                               column_widths=["5%", "8%", "31%", "31%", "25%"])
        return table_, gr.Timer(active=not final)

    timer.tick(show, [run_state, failures, earlier], [table, timer], show_progress="hidden")
    run_state.change(lambda r, f: (*show(r, f), gr.update(choices=comparable_runs(engine, r), value=None)),
                     [run_state, failures], [table, timer, earlier])
    failures.change(show, [run_state, failures, earlier], [table, timer])
    earlier.change(ui_errors(show), [run_state, failures, earlier], [table, timer])

    def refresh(current_model, current_task):
        models = model_choices(engine)
        tasks = [t.name for t in engine.list_tasks()]
        return (gr.update(choices=models, value=current_model if current_model in models else
                          (models[0] if models else None)),
                gr.update(choices=tasks, value=current_task if current_task in tasks else
                          (tasks[0] if tasks else None)))

    return {"refresh": (refresh, [model, task], [model, task]), "forms": [form]}
