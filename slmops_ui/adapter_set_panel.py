"""The *Adapter set* panel of the Fine-tune tab: several LoRA adapters on the form's base with the form's settings,
one per task (a training file each), trained one after the other and each scored on its task; the results as a table
that fills in as adapters finish."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine import AdapterSetConfig

from .forms import ConfigForm, ui_errors
from .job_panel import build_job_panel, follow_run

DATASETS = Path(__file__).resolve().parents[1] / "assets" / "datasets"
SPEC_HEADERS = ["adapter name", "training file", "held-out file (optional)", "task (optional)",
                "target modules (optional)"]
RESULT_HEADERS = ["adapter", "task", "task score before", "task score after", "95 % interval", "eval loss after",
                  "training examples", "wall time (s)"]
NOT_SHARED = ("train_path", "eval_path", "output_name")  # each adapter has its own


def example_rows() -> list[list[str]]:
    """The two bundled tasks, one adapter each."""
    return [["json-adapter", str(DATASETS / "request_to_json.train.jsonl"), "", "request_to_json", ""],
            ["label-adapter", str(DATASETS / "ticket_label.train.jsonl"), "", "ticket_label", ""]]


def result_rows(summary: dict) -> list[list]:
    def num(value):
        return "" if value is None else round(value, 3)

    return [[r["adapter"], r["task"], num(r.get("score_before")), num(r.get("score_after")),
             f"{r['ci_low']:.3f}–{r['ci_high']:.3f}" if r.get("ci_low") is not None else "",
             num(r.get("eval_loss_after")), r.get("train_examples") or "", r.get("wall_s") or ""]
            for r in summary.get("adapters", [])]


def build_adapter_set_panel(engine, finetune: ConfigForm) -> ConfigForm:
    """The set's form shares every fine-tune widget but the data and the output name (each adapter has its own)."""
    run_state = gr.State(None)
    form = ConfigForm(AdapterSetConfig, required=finetune.required)
    with gr.Accordion("Adapter set · one adapter per task on one base, trained together", open=False):
        for name, widget in finetune.widgets.items():
            if name not in NOT_SHARED:
                form.field(name, widget)
        gr.Markdown("One LoRA adapter per row, each trained with the settings above on its own file (a row may "
                    "name its own target modules). A row that names a task holds out the task's evaluation set and "
                    "scores the adapter (and once, the base) on it with the task's scorer; without a task the "
                    "adapter is scored on a split of its file. The adapters can then share one ONNX export "
                    "(Quantize tab, *Adapters to export with it*).")
        form.field("adapters", gr.Dataframe(headers=SPEC_HEADERS, value=example_rows(), interactive=True,
                                            col_count=(len(SPEC_HEADERS), "fixed"), row_count=(2, "dynamic"),
                                            label="Adapters", elem_id="set-adapters"))
        start = gr.Button("Train the adapter set", elem_id="set-start")
        message = gr.Markdown("")
        build_job_panel(engine, run_state, ("adapter_set",), chart=False)
        results = gr.Dataframe(headers=RESULT_HEADERS, value=[], interactive=False, label="Adapters of the set",
                               elem_id="set-results", wrap=True)

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(form.config(values))
        return run_id, f"Started adapter-set run {run_id}."

    start.click(do_start, form.inputs, [run_state, message])
    follow_run(engine, run_state, results, lambda run: result_rows(run.summary), [])
    return form
