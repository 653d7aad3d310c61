"""Quantize tab: export a model to ONNX Runtime GenAI (one variant, or a sweep of candidates with a Pareto chart),
follow the run, register a sweep candidate."""
from __future__ import annotations

import gradio as gr

from engine import ModelFormat, QuantizeConfig, QuantizeSweepConfig, sweep_variants

from ..charts import pareto_figure
from ..forms import model_choices, number, ui_errors
from ..job_panel import build_job_panel

PRECISION_HELP = ("int4 affine (default): 4-bit blocks with float offsets, exact for Q4_1 weights such as the "
                  "bundled model's, embeddings/head 8-bit, run by our fused kernel. int4 builder: the ONNX Runtime "
                  "GenAI builder's own int4 (smaller, loses quality on this model). A LoRA adapter is merged into "
                  "its base first.")


def exports_rows(engine) -> list[list]:
    rows = []
    for m in engine.list_models():
        if m.format != ModelFormat.ONNX:
            continue
        summary = engine.export_summary(m.id)
        rows.append([m.id, m.parent_id or "", f"{(m.size_bytes or 0) / 1e6:.1f}", summary.get("variant", ""),
                     summary.get("ppl_ratio", ""), summary.get("decode_tok_s", ""),
                     summary.get("first_token_agreement", "")])
    return rows


def candidate_rows(summary: dict) -> list[list]:
    return [[c["variant"], c["size_mb"], c.get("size_ratio"), c["decode_tok_s"], c["ppl_ratio"],
             c["first_token_agreement"], c["answer"]] for c in summary.get("candidates", [])]


def build_quantize_tab(engine) -> dict:
    run_state = gr.State(None)
    gr.Markdown("Convert a model for fast local inference with ONNX Runtime GenAI. Every export is verified "
                "against its source: the answer to a fixed prompt, first-token agreement, perplexity on Python's "
                "own documentation text, and decode speed.")
    with gr.Row():
        model = gr.Dropdown(label="Source model", choices=[], info="Any full model or LoRA adapter "
                            "(an adapter is merged into its base first).")
        output_name = gr.Textbox(label="Output name (optional)", placeholder="<model>-onnx-<variant>")
    with gr.Row():
        precision = gr.Radio(["int4", "int8", "fp32"], value="int4", label="Precision", info=PRECISION_HELP)
        method = gr.Radio(["affine", "builder", "olive"], value="affine", label="int4 method",
                          info="olive: an Olive ONNX quantization pass (below) on the builder's fp32 export.")
        olive_pass = gr.Radio(["rtn", "kquant"], value="rtn", label="Olive pass",
                              info="rtn: OnnxBlockWiseRtnQuantization; kquant: OnnxKQuantQuantization.")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            block = gr.Dropdown([16, 32, 64, 128, 256], value=32, label="int4 block size",
                                info="Must divide the model's widths (576 and 1536 for the bundled model).")
            symmetric = gr.Checkbox(value=True, label="Symmetric (builder int4)")
            higher = gr.Dropdown(["none", "last_matmul", "mixed_layers"], value="none",
                                 label="Keep at int8 (builder int4)")
            accuracy = gr.Dropdown([4, 1], value=4, label="Accuracy level",
                                   info="4: int8 activations (fast on CPU); 1: fp32 activations (slow on CPU).")
            kernel = gr.Radio(["fused", "portable"], value="fused", label="Kernel (affine int4)",
                              info="fused: one native Q4_1 kernel per weight matrix (x86-64 AVX2; built here with "
                                   "g++, shipped in the export); portable: ONNX Runtime's own ops only.")
            verify_tokens = number(QuantizeConfig, "verify_tokens", precision=0)
        with gr.Row():
            delta = gr.Radio(["auto", "off"], value="auto", label="Fine-tune delta (affine int4)",
                             info=QuantizeConfig.model_fields["fine_tune_delta"].description)
            min_agreement = number(QuantizeConfig, "min_agreement", label="Minimum first-token agreement")
    with gr.Row():
        check = gr.Button("Check")
        start = gr.Button("Export and verify", variant="primary", elem_id="q-start")
    check_text = gr.Markdown("")
    with gr.Accordion("Sweep: build several candidates and pick by size, speed and quality", open=False):
        with gr.Row():
            candidates = gr.CheckboxGroup(list(sweep_variants()), value=QuantizeSweepConfig.model_fields[
                "candidates"].default_factory(), label="Candidates")
            bound = number(QuantizeSweepConfig, "max_ppl_ratio", label="Quality bound (perplexity × source)")
        sweep = gr.Button("Run sweep", elem_id="q-sweep")
    build_job_panel(engine, run_state, ("quantize", "quantize_sweep"),
                    chart=False)
    pareto = gr.Plot(label="Candidates", visible=False, elem_id="q-pareto")
    cand_table = gr.Dataframe(headers=["variant", "MB", "size ratio", "decode tok/s", "perplexity ×", "first-token "
                                       "agreement", "answer to 'capital of France?'"], visible=False,
                              interactive=False)
    with gr.Row():
        pick = gr.Dropdown(label="Register a candidate of this sweep", choices=[])
        pick_name = gr.Textbox(label="as (optional name)")
        register = gr.Button("Register candidate")
    gr.Markdown("### ONNX exports")
    exports = gr.Dataframe(headers=["model", "source", "MB", "variant", "perplexity ×", "decode tok/s",
                                    "first-token agreement"], interactive=False, elem_id="q-exports")
    form = [model, output_name, precision, method, olive_pass, block, symmetric, higher, accuracy, kernel,
            verify_tokens, delta, min_agreement]

    def to_config(model_id, out, precision_, method_, olive_, block_, sym, higher_, acc, kernel_,
                  tokens, delta_, agreement) -> QuantizeConfig:
        if not model_id:
            raise gr.Error("Pick a source model.")
        return QuantizeConfig(model_id=model_id, output_name=(out or "").strip(), precision=precision_,
                              method=method_, olive_pass=olive_, block_size=int(block_), symmetric=sym,
                              higher_precision=higher_, accuracy_level=int(acc), kernel=kernel_,
                              verify_tokens=int(tokens), fine_tune_delta=delta_, min_agreement=float(agreement))

    @ui_errors
    def do_check(*values):
        config = to_config(*values)
        facts = engine.check_quantize(config)
        return (f"OK: **{facts['architecture']}**, widths {', '.join(map(str, facts['widths']))}; will write "
                f"**{config.output_id()}**, needs about {facts['bytes_needed'] / 1e9:.2f} GB of disk while "
                "building.")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(to_config(*values))
        return run_id, f"Started run {run_id}."

    @ui_errors
    def do_sweep(model_id, tokens, chosen, bound_):
        if not model_id:
            raise gr.Error("Pick a source model.")
        run_id = engine.start_run(QuantizeSweepConfig(model_id=model_id, candidates=chosen or [],
                                                      max_ppl_ratio=bound_, verify_tokens=int(tokens)))
        return run_id, f"Started sweep run {run_id}."

    check.click(do_check, form, [check_text])
    start.click(do_start, form, [run_state, check_text])
    sweep.click(do_sweep, [model, verify_tokens, candidates, bound], [run_state, check_text])

    shown = gr.State("")  # what was drawn last: polling redraws only when the candidates change

    def show_run(run_id, last=""):
        if not run_id:
            return gr.update(visible=False), gr.update(visible=False), gr.update(choices=[], value=None), \
                exports_rows(engine), "", gr.Timer(active=False)
        run = engine.get_run(int(run_id))
        signature = f"{run.id}:{run.status.value}:{len(run.summary.get('candidates', []))}"
        if signature == last:
            return (gr.skip(),) * 4 + (last, gr.Timer(active=not run.status.final))
        rows = run.summary.get("candidates", [])
        fig = pareto_figure(rows, run.summary.get("max_ppl_ratio") or run.config.get("max_ppl_ratio"))
        left = [r["variant"] for r in rows if r["variant"] != run.summary.get("chosen")] if run.status.final else []
        return (gr.update(value=fig, visible=fig is not None),
                gr.update(value=candidate_rows(run.summary), visible=bool(rows)),
                gr.update(choices=left, value=None), exports_rows(engine), signature,
                gr.Timer(active=not run.status.final))

    timer = gr.Timer(3.0, active=False)
    timer.tick(show_run, [run_state, shown], [pareto, cand_table, pick, exports, shown, timer],
               show_progress="hidden")
    run_state.change(show_run, [run_state], [pareto, cand_table, pick, exports, shown, timer])

    @ui_errors
    def do_register(run_id, variant, name):
        if not run_id or not variant:
            raise gr.Error("Pick a candidate of a finished sweep.")
        record = engine.register_candidate(int(run_id), variant, name)
        gr.Info(f"Registered '{record.id}'.")
        return exports_rows(engine)

    register.click(do_register, [run_state, pick, pick_name], [exports])

    def refresh(current):
        sources = [m for m in model_choices(engine)
                   if engine.get_model(m).format in {ModelFormat.HF, ModelFormat.ADAPTER}]
        return (gr.update(choices=sources, value=current if current in sources else (sources[0] if sources else None)),
                exports_rows(engine))

    fields = {"model_id": model, "output_name": output_name, "precision": precision, "method": method,
              "olive_pass": olive_pass,
              "block_size": block, "symmetric": symmetric, "higher_precision": higher, "accuracy_level": accuracy,
              "kernel": kernel, "verify_tokens": verify_tokens, "fine_tune_delta": delta,
              "min_agreement": min_agreement}
    sweep_fields = {"model_id": model, "verify_tokens": verify_tokens, "candidates": candidates,
                    "max_ppl_ratio": bound}
    return {"refresh": (refresh, [model], [model, exports]),
            "clone": [({"quantize"}, fields), ({"quantize_sweep"}, sweep_fields)]}
