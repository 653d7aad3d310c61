"""Fine-tune tab: pick a model and a dataset, validate it (with a preview of what is trained), estimate, start,
and follow the run with its live loss chart."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from engine import FineTuneConfig, ModelFormat

from ..adapter_set_panel import build_adapter_set_panel
from ..forms import ConfigForm, model_choices, settings_file_row, ui_errors
from ..job_panel import build_job_panel
from ..tables import fmt_duration
from ..tune_panel import build_tune_panel

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "datasets"
EXAMPLE_TRAIN = str(EXAMPLE / "request_to_json.train.jsonl")
EXAMPLE_EVAL = str(EXAMPLE / "request_to_json.eval.jsonl")


def preview_html(report) -> str:
    """The first examples as the model sees them; the trained-on part is highlighted."""
    blocks = []
    for segments in report.preview:
        parts = [f"<mark>{html.escape(t)}</mark>" if trained else html.escape(t) for t, trained in segments]
        blocks.append(f"<pre class='ft-preview'>{''.join(parts)}</pre>")
    legend = "<p>Highlighted: the tokens the loss is computed on. The rest is masked.</p>"
    return legend + "".join(blocks)


def report_markdown(report) -> str:
    lines = [f"**{Path(report.path).name}**: {report.rows} rows, shape `{report.shape.value}`, columns "
             + ", ".join(f"{k}→`{v}`" for k, v in report.mapping.items()),
             f"Tokens per example: longest {report.max_tokens}, mean {report.mean_tokens:.0f}."]
    lines += [f"- **Error:** {e}" for e in report.errors] + [f"- Warning: {w}" for w in report.warnings]
    if report.ok and not report.warnings:
        lines.append("- No problems found.")
    return "\n".join(lines)


def build_finetune_tab(engine, qlora_reason: str | None) -> dict:
    run_state = gr.State(None)
    form = ConfigForm(FineTuneConfig, required={"model_id": "Pick a base model."})
    with gr.Row():
        model = form.field("model_id", gr.Dropdown(label="Base model", choices=[],
                                                   info="A full model (safetensors); adapters train on it."))
        form.field("method", choices=["lora", "full"] + ([] if qlora_reason else ["qlora"]), label="Method",
                   info="QLoRA: " + (qlora_reason or "available (CUDA + bitsandbytes)."))
        form.field("backend", label="Backend", info="transformers: our training loop. olive: Microsoft Olive's "
                   "`olive finetune` (LoRA/QLoRA), same data and scores; the run keeps its Olive config.")
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Upload training data (.jsonl, .json, .csv, .parquet)", file_count="single",
                             file_types=[".jsonl", ".json", ".csv", ".parquet"])
            train_path = form.field("train_path", label="…or a training file path", value=EXAMPLE_TRAIN, info=None)
            made = gr.Dropdown(label="…or a dataset made by a run (Distill, stage 1)", choices=[],
                               info="Fills the path above.")
            form.field("eval_path", label="Eval file path (empty: split off the eval ratio)", value=EXAMPLE_EVAL,
                       info=None)
            form.field("eval_ratio", step=0.05)
            form.field("columns", label="Column mapping (optional)", placeholder="prompt=question, completion=answer",
                       info="Only when your columns are not messages / instruction,input,output / prompt,completion "
                            "/ text.")
            validate = gr.Button("Validate data")
        with gr.Column():
            report = gr.Markdown("")
            preview = gr.HTML("")
    with gr.Accordion("LoRA", open=True):
        with gr.Row():
            form.field("lora_r", step=1, maximum=64, label="LoRA rank r")
            form.field("lora_alpha", step=1, maximum=128, label="LoRA alpha")
            form.field("lora_dropout", step=0.01, maximum=0.5, label="LoRA dropout")
            form.field("target_modules", label="Target modules")
    with gr.Accordion("Training", open=True):
        with gr.Row():
            for name in ("epochs", "max_steps", "learning_rate"):
                form.field(name)
            form.field("lr_scheduler", label="LR scheduler")
            form.field("warmup_ratio", step=0.01)
        with gr.Row():
            for name in ("batch_size", "grad_accum", "max_length", "packing"):
                form.field(name)
        with gr.Row():
            for name in ("eval_steps", "save_steps", "save_total_limit", "seed"):
                form.field(name)
        with gr.Row():
            form.field("eval_max_examples")
            form.field("merge", label="Also save a merged model")
            form.field("output_name", label="Output model name (optional)")
    form.remaining()
    settings_file_row(form, engine.settings.cache_dir / "settings")
    with gr.Row():
        estimate = gr.Button("Estimate memory and time")
        start = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")
    estimate_text = gr.Markdown("")
    build_job_panel(engine, run_state, ("finetune",), continuable=True)
    inputs = form.inputs + [upload]

    def to_config(*values) -> FineTuneConfig:
        *fields, upload_ = values
        return form.config(fields, **({"train_path": upload_} if upload_ else {}))

    @ui_errors
    def do_validate(*values):
        config = to_config(*values)
        rep = engine.validate_dataset(config.model_id, config.train_path, config.max_length, config.columns)
        return report_markdown(rep), preview_html(rep)

    @ui_errors
    def do_estimate(*values):
        config = to_config(*values)
        check = engine.check_finetune(config)
        mem = check["memory"]
        step_s = engine.probe_finetune_step(config)
        train_rows = check["reports"][0].rows if config.eval_path else int(check["reports"][0].rows *
                                                                          (1 - config.eval_ratio))
        steps = config.optimizer_steps(train_rows)
        return (f"Memory needed ≈ **{mem['total'] / 2**30:.2f} GiB** (weights {mem['weights'] / 2**30:.2f}, "
                f"optimizer {mem['optimizer'] / 2**30:.2f}, activations {mem['activations'] / 2**30:.2f}) of "
                f"{check['available_bytes'] / 2**30:.1f} GiB free · measured **{step_s:.2f} s per step** "
                f"(2-step probe, batch {config.batch_size} × grad accum {config.grad_accum}) · **{steps} steps** "
                f"≈ {fmt_duration(steps * step_s)} of training steps, plus an eval loss every {config.eval_steps} "
                f"steps and the held-out scoring before and after (the run's ETA times those as it goes)")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(to_config(*values))
        return run_id, f"Started run {run_id}."

    build_tune_panel(engine, "finetune", form, lambda *values: form.config(values))
    adapter_set = build_adapter_set_panel(engine, form)
    validate.click(do_validate, inputs, [report, preview])
    made.change(lambda path: path or gr.skip(), [made], [train_path])
    estimate.click(do_estimate, inputs, [estimate_text], concurrency_limit=1, concurrency_id="probe")
    start.click(do_start, inputs, [run_state, estimate_text])

    def refresh(current, current_data):
        choices = [m for m in model_choices(engine) if engine.get_model(m).format == ModelFormat.HF]
        datasets = [(f"{d.path.rsplit('/', 1)[-1]} (run {d.run_id})", d.path) for d in engine.list_datasets()]
        return (gr.update(choices=choices, value=current if current in choices else (choices[0] if choices else None)),
                gr.update(choices=datasets, value=current_data if current_data in dict(datasets).values() else None))

    return {"refresh": (refresh, [model, made], [model, made]), "forms": [form, adapter_set]}
