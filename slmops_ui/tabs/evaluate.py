"""Evaluate tab: score any model on a task (the bundled one, or one added with `python -m engine tasks add`): the
score with its 95 % interval, which backend answered, and every example — prompt, reference, answer, score —
filterable to the failures."""
from __future__ import annotations

import gradio as gr

from engine import EvaluateConfig

from ..forms import ConfigForm, model_choices, ui_errors
from ..job_panel import build_job_panel

HEADERS = ["#", "score", "answer", "reference", "prompt"]  # the answer first: it is what a user reads


def example_rows(engine, run_id, failures_only: bool) -> list[list]:
    if not run_id:
        return []
    rows = engine.run_predictions(int(run_id))
    return [[r["n"], round(r["score"], 3), r["prediction"], r["reference"], r["prompt"]] for r in rows
            if not failures_only or r["score"] < 1.0]


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
        task = form.field("task", gr.Dropdown(label="Task", choices=[], elem_id="eval-task",
                                              info="Add tasks with `python -m engine tasks add --config task.yaml`."))
        form.field("limit", label="Examples (0: all)")
        form.field("backend", elem_id="eval-backend")
        form.field("threads")
    start = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("evaluate",), chart=False)
    failures = gr.Checkbox(value=False, label="Failures only")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="eval-examples",
                         column_widths=["5%", "8%", "31%", "31%", "25%"])

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(form.config(values))
        return run_id, f"Started run {run_id}."

    start.click(do_start, form.inputs, [run_state, message])
    timer = gr.Timer(3.0, active=False)

    def show(run_id, failures_only):
        final = not run_id or engine.get_run(int(run_id)).status.final
        return example_rows(engine, run_id, failures_only), gr.Timer(active=not final)

    timer.tick(show, [run_state, failures], [table, timer], show_progress="hidden")
    run_state.change(show, [run_state, failures], [table, timer])
    failures.change(show, [run_state, failures], [table, timer])

    def refresh(current_model, current_task):
        models = model_choices(engine)
        tasks = [t.name for t in engine.list_tasks()]
        return (gr.update(choices=models, value=current_model if current_model in models else
                          (models[0] if models else None)),
                gr.update(choices=tasks, value=current_task if current_task in tasks else
                          (tasks[0] if tasks else None)))

    return {"refresh": (refresh, [model, task], [model, task]), "forms": [form]}
