"""Fine-tune tab: pick a model and a dataset, validate it (with a preview of what is trained), estimate, start,
and follow the run with its live loss chart."""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from engine import FineTuneConfig, ModelFormat

from ..forms import model_choices, number, parse_mapping, slider, ui_errors
from ..job_panel import build_job_panel

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
    with gr.Row():
        model = gr.Dropdown(label="Base model", choices=[], info="A full model (safetensors); adapters train on it.")
        method = gr.Radio(["lora", "full"] + ([] if qlora_reason else ["qlora"]), value="lora", label="Method",
                          info="QLoRA: " + (qlora_reason or "available (CUDA + bitsandbytes)."))
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Upload training data (.jsonl, .json, .csv, .parquet)", file_count="single",
                             file_types=[".jsonl", ".json", ".csv", ".parquet"])
            train_path = gr.Textbox(label="…or a training file path", value=EXAMPLE_TRAIN)
            made = gr.Dropdown(label="…or a dataset made by a run (Distill, stage 1)", choices=[],
                               info="Fills the path above.")
            eval_path = gr.Textbox(label="Eval file path (empty: split off the eval ratio)", value=EXAMPLE_EVAL)
            eval_ratio = slider(FineTuneConfig, "eval_ratio", 0.05)
            columns = gr.Textbox(label="Column mapping (optional)", placeholder="prompt=question, completion=answer",
                                 info="Only when your columns are not messages / instruction,input,output / "
                                      "prompt,completion / text.")
            validate = gr.Button("Validate data")
        with gr.Column():
            report = gr.Markdown("")
            preview = gr.HTML("")
    with gr.Accordion("LoRA", open=True):
        with gr.Row():
            lora_r = slider(FineTuneConfig, "lora_r", 1, maximum=64, label="LoRA rank r")
            lora_alpha = slider(FineTuneConfig, "lora_alpha", 1, maximum=128, label="LoRA alpha")
            lora_dropout = slider(FineTuneConfig, "lora_dropout", 0.01, maximum=0.5, label="LoRA dropout")
            targets = gr.Textbox(label="Target modules", value=FineTuneConfig.model_fields["target_modules"].default,
                                 info=FineTuneConfig.model_fields["target_modules"].description)
    with gr.Accordion("Training", open=True):
        with gr.Row():
            epochs = number(FineTuneConfig, "epochs")
            max_steps = number(FineTuneConfig, "max_steps", precision=0)
            lr = number(FineTuneConfig, "learning_rate")
            scheduler = gr.Dropdown(["linear", "cosine", "constant", "constant_with_warmup"], value="linear",
                                    label="LR scheduler")
            warmup = slider(FineTuneConfig, "warmup_ratio", 0.01)
        with gr.Row():
            batch = number(FineTuneConfig, "batch_size", precision=0)
            accum = number(FineTuneConfig, "grad_accum", precision=0)
            max_length = number(FineTuneConfig, "max_length", precision=0)
            packing = gr.Checkbox(label="Packing", value=False, info=FineTuneConfig.model_fields["packing"].description)
        with gr.Row():
            eval_steps = number(FineTuneConfig, "eval_steps", precision=0)
            save_steps = number(FineTuneConfig, "save_steps", precision=0)
            keep = number(FineTuneConfig, "save_total_limit", precision=0)
            seed = number(FineTuneConfig, "seed", precision=0)
        with gr.Row():
            scored = number(FineTuneConfig, "eval_max_examples", precision=0)
            merge = gr.Checkbox(label="Also save a merged model", value=False)
            output_name = gr.Textbox(label="Output model name (optional)")
    with gr.Row():
        estimate = gr.Button("Estimate memory and time")
        start = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")
    estimate_text = gr.Markdown("")
    build_job_panel(engine, run_state, ("finetune",), continuable=True)

    inputs = [model, method, upload, train_path, eval_path, eval_ratio, columns, lora_r, lora_alpha, lora_dropout,
              targets, epochs, max_steps, lr, scheduler, warmup, batch, accum, max_length, packing, eval_steps,
              save_steps, keep, seed, scored, merge, output_name]

    def to_config(model_id, method_, upload_, train_, eval_, ratio, columns_, r, alpha, dropout, targets_, epochs_,
                  steps, lr_, sched, warm, batch_, accum_, max_len, pack, ev_steps, sv_steps, keep_, seed_, scored_,
                  merge_, out) -> FineTuneConfig:
        if not model_id:
            raise gr.Error("Pick a base model.")
        return FineTuneConfig(
            model_id=model_id, method=method_, train_path=(upload_ or train_ or "").strip(),
            eval_path=(eval_ or "").strip() or None, eval_ratio=ratio, columns=parse_mapping(columns_), lora_r=r,
            lora_alpha=alpha, lora_dropout=dropout, target_modules=targets_, epochs=epochs_, max_steps=steps,
            learning_rate=lr_, lr_scheduler=sched, warmup_ratio=warm, batch_size=batch_, grad_accum=accum_,
            max_length=max_len, packing=pack, eval_steps=ev_steps, save_steps=sv_steps, save_total_limit=keep_,
            seed=seed_, eval_max_examples=scored_, merge=merge_, output_name=(out or "").strip() or None)

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
        return (f"Memory needed ≈ **{mem['total'] / 2**30:.2f} GiB** (weights {mem['weights'] / 2**30:.2f}, "
                f"optimizer {mem['optimizer'] / 2**30:.2f}, activations {mem['activations'] / 2**30:.2f}) of "
                f"{check['available_bytes'] / 2**30:.1f} GiB free · measured **{step_s:.2f} s per step** "
                f"(2-step probe, batch {config.batch_size} × grad accum {config.grad_accum})")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(to_config(*values))
        return run_id, f"Started run {run_id}."

    validate.click(do_validate, inputs, [report, preview])
    made.change(lambda path: path or gr.skip(), [made], [train_path])
    estimate.click(do_estimate, inputs, [estimate_text], concurrency_limit=1, concurrency_id="probe")
    start.click(do_start, inputs, [run_state, estimate_text])

    def refresh(current, current_data):
        choices = [m for m in model_choices(engine) if engine.get_model(m).format == ModelFormat.HF]
        datasets = [(f"{d.path.rsplit('/', 1)[-1]} (run {d.run_id})", d.path) for d in engine.list_datasets()]
        return (gr.update(choices=choices, value=current if current in choices else (choices[0] if choices else None)),
                gr.update(choices=datasets, value=current_data if current_data in dict(datasets).values() else None))

    fields = {"model_id": model, "method": method, "train_path": train_path, "eval_path": eval_path,
              "eval_ratio": eval_ratio, "columns": columns, "lora_r": lora_r, "lora_alpha": lora_alpha,
              "lora_dropout": lora_dropout, "target_modules": targets, "epochs": epochs, "max_steps": max_steps,
              "learning_rate": lr, "lr_scheduler": scheduler, "warmup_ratio": warmup, "batch_size": batch,
              "grad_accum": accum, "max_length": max_length, "packing": packing, "eval_steps": eval_steps,
              "save_steps": save_steps, "save_total_limit": keep, "seed": seed, "eval_max_examples": scored,
              "merge": merge, "output_name": output_name}
    return {"refresh": (refresh, [model, made], [model, made]), "clone": [({"finetune"}, fields)]}
