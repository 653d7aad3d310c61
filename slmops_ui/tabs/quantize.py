"""Quantize tab: export a model to ONNX Runtime GenAI (one variant, or a sweep of candidates with a Pareto chart) or
to GGUF (llama.cpp, Ollama, LM Studio), follow the run, register a sweep candidate."""
from __future__ import annotations

import gradio as gr

from engine import (EXPORT_FORMATS, AddAdaptersConfig, GgufConfig, ModelFormat, QuantizeConfig, QuantizeSweepConfig,
                    sweep_variants)

from ..charts import pareto_figure
from ..forms import ConfigForm, model_choices, task_choices, ui_errors
from .. import navigation
from ..job_panel import build_job_panel

PRECISION_HELP = ("int4 affine (default): 4-bit blocks with float offsets, exact for Q4_1 weights such as the "
                  "bundled model's, embeddings/head 8-bit, run by our fused kernel. int4 builder: the ONNX Runtime "
                  "GenAI builder's own int4 (smaller, loses quality on this model). A LoRA adapter is merged into "
                  "its base first.")


def exports_rows(engine) -> list[list]:
    rows = []
    for m in engine.list_models():
        if m.format not in EXPORT_FORMATS:
            continue
        summary = engine.export_summary(m.id)
        variant = summary.get("variant", "") if m.format == ModelFormat.ONNX else f"gguf {summary.get('gguf_type', '')}"
        rows.append([m.id, m.parent_id or "", f"{(m.size_bytes or 0) / 1e6:.1f}", variant,
                     summary.get("ppl_ratio", ""), summary.get("decode_tok_s", ""),
                     summary.get("first_token_agreement", ""), ", ".join(engine.adapters_of(m))])
    return rows


def candidate_rows(summary: dict) -> list[list]:
    return [[c["variant"], c["size_mb"], c.get("size_ratio"), c["decode_tok_s"], c["ppl_ratio"],
             c["first_token_agreement"], c["answer"]] for c in summary.get("candidates", [])]


def adapter_rows(summary: dict) -> list[list]:
    def share(value):
        return "" if value is None else f"{value:.1%}"
    return [[r["adapter"], r["examples"], share(r["greedy_agreement"]), r["tokens"], share(r.get("export_score")),
             share(r.get("source_score")), share(r.get("score_kept"))] for r in summary.get("adapters", [])]


def build_quantize_tab(engine) -> dict:
    run_state = gr.State(None)
    gr.Markdown("Convert a model for fast local inference with ONNX Runtime GenAI, or to GGUF for llama.cpp, Ollama "
                "and LM Studio (below). Every export is verified against its source: the answer to a fixed prompt, "
                "first-token agreement, perplexity on Python's own documentation text, and decode speed.")
    form = ConfigForm(QuantizeConfig, required={"model_id": "Pick a source model."})
    with gr.Row():
        model = form.field("model_id", gr.Dropdown(label="Source model", choices=[], info="Any full model or LoRA "
                                                   "adapter (an adapter is merged into its base first)."))
        form.field("output_name", label="Output name (optional)", placeholder="<model>-onnx-<variant>", info=None)
    navigation.picker("quantize", model)
    adapters = form.field("adapters", gr.Dropdown(
        label="Adapters to export with it (optional)", choices=[], value=[], multiselect=True, elem_id="q-adapters",
        info="LoRA adapters of the source model: the base is exported once (int4 affine) and each adapter becomes a "
             "small file beside it, checked against its transformers adapter on its held-out examples. Chat and "
             "serve pick one as EXPORT:ADAPTER."))
    with gr.Row():
        form.field("precision", info=PRECISION_HELP)
        form.field("method", label="int4 method",
                   info="olive: an Olive ONNX quantization pass (below) on the builder's fp32 export.")
        form.field("olive_pass", label="Olive pass", visible=False)
    with gr.Row():
        task = form.field("task", gr.Dropdown(label="Verify on a task (optional)", choices=[""], value="",
                                              elem_id="q-task", info=QuantizeConfig.model_fields["task"].description))
        form.field("task_limit")
        form.field("min_task_retention", step=0.01)
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            form.field("block_size", gr.Dropdown([16, 32, 64, 128, 256], value=32, label="int4 block size",
                                                 info="Must divide the model's widths (576 and 1536 for the bundled "
                                                      "model)."))
            form.field("symmetric", label="Symmetric (builder int4)", visible=False)
            form.field("higher_precision", label="Keep at int8 (builder int4)", visible=False)
            form.field("accuracy_level", gr.Dropdown([4, 1], value=4, label="Accuracy level",
                                                     info="4: int8 activations (fast on CPU); 1: fp32 activations "
                                                          "(slow on CPU)."))
            form.field("kernel", label="Kernel (affine int4)")
            verify_tokens = form.field("verify_tokens")
        with gr.Row():
            form.field("fit", label="4-bit fit (affine int4)")
            form.field("calibration_path", label="Calibration data (gptq fit, optional)",
                       placeholder="the model's own training data", info=None)
            form.field("calibration_examples", label="Calibration examples")
        with gr.Row():
            form.field("fine_tune_delta", label="Fine-tune delta (affine int4)")
            form.field("min_agreement", label="Minimum first-token agreement")
            form.field("execution_provider")
            form.field("threads")
            form.field("adapter_examples", label="Held-out examples per adapter")
    with gr.Row():
        check = gr.Button("Check")
        start = gr.Button("Export and verify", variant="primary", elem_id="q-start")
    check_text = gr.Markdown("")
    sweep_form = ConfigForm(QuantizeSweepConfig, required={"model_id": "Pick a source model."})
    sweep_form.field("model_id", model)
    sweep_form.field("verify_tokens", verify_tokens)
    with gr.Accordion("Sweep: build several candidates and pick by size, speed and quality", open=False):
        with gr.Row():
            sweep_form.field("candidates", choices=list(sweep_variants()), label="Candidates", info=None)
            sweep_form.field("max_ppl_ratio", label="Quality bound (perplexity × source)")
            sweep_form.field("min_agreement", label="Minimum first-token agreement (sweep)")
        sweep_form.remaining(label="More sweep settings")
        sweep = gr.Button("Run sweep", elem_id="q-sweep")
    gguf_form = ConfigForm(GgufConfig, required={"model_id": "Pick a source model."})
    gguf_form.field("model_id", model)
    for name in ("task", "task_limit", "min_task_retention"):
        gguf_form.field(name, form.widgets[name])
    with gr.Accordion("GGUF for llama.cpp, Ollama and LM Studio", open=False, elem_id="q-gguf"):
        gr.Markdown("One `.gguf` file with the tokenizer and chat template inside, and an Ollama `Modelfile` beside "
                    "it (`ollama create NAME -f Modelfile` in the export's folder). Llama-family models (the bundled "
                    "SmolLM2 and what is made from it). Verified by reading the file back with transformers' GGUF "
                    "loader and comparing it with its source; the task above is checked too when one is chosen.")
        with gr.Row():
            gguf_form.field("gguf_type", label="GGUF type")
            gguf_form.field("output_name", label="Output name (optional)", placeholder="<model>-gguf-<type>",
                            info=None)
            gguf_form.field("system_prompt", label="Modelfile system prompt (optional)", info=None)
            gguf_form.field("verify_tokens", label="Verify tokens (GGUF)")
        gguf_form.remaining(label="More GGUF settings")
        gguf_start = gr.Button("Write GGUF and verify", elem_id="q-gguf-start")
    add_form = ConfigForm(AddAdaptersConfig, required={"model_id": "Pick an export made with adapters.",
                                                       "adapters": "Pick at least one adapter to add."})
    with gr.Accordion("Add adapters to an export made with adapters", open=False, elem_id="q-add"):
        gr.Markdown("Only the new adapters are converted and checked against their transformers adapters (held-out "
                    "examples); the export's base is not rebuilt. Chat and serve then offer EXPORT:ADAPTER.")
        with gr.Row():
            add_export = add_form.field("model_id", gr.Dropdown(label="Export", choices=[], elem_id="q-add-export"))
            add_adapters = add_form.field("adapters", gr.Dropdown(
                label="Adapters to add", choices=[], value=[], multiselect=True, elem_id="q-add-adapters",
                info="LoRA adapters of the export's base that it does not have yet."))
        with gr.Row():
            add_form.field("adapter_examples", label="Held-out examples per adapter")
            add_form.field("min_agreement", label="Minimum greedy-token agreement")
            add_form.field("min_task_retention", step=0.01)
            add_form.field("threads")
        add_start = gr.Button("Add adapters", elem_id="q-add-start")
    build_job_panel(engine, run_state, ("quantize", "quantize_sweep", "gguf", "add_adapters"),
                    chart=False)
    pareto = gr.Plot(label="Candidates", visible=False, elem_id="q-pareto")
    cand_table = gr.Dataframe(headers=["variant", "MB", "size ratio", "decode tok/s", "perplexity ×", "first-token "
                                       "agreement", "answer to 'capital of France?'"], visible=False,
                              interactive=False)
    with gr.Row():
        pick = gr.Dropdown(label="Register a candidate of this sweep", choices=[])
        pick_name = gr.Textbox(label="as (optional name)")
        register = gr.Button("Register candidate")
    gr.Markdown("### Exports (ONNX and GGUF)")
    exports = gr.Dataframe(headers=["model", "source", "MB", "variant", "perplexity ×", "decode tok/s",
                                    "first-token agreement", "adapters"], interactive=False, elem_id="q-exports")
    adapter_table = gr.Dataframe(headers=["adapter", "held-out examples", "greedy-token agreement", "tokens",
                                          "export score", "transformers score", "score kept"], visible=False,
                                 interactive=False, label="Adapters of this export", elem_id="q-adapter-table")

    def adapter_options(source, chosen, have=()):
        """The ready LoRA adapters of `source` (less those in `have`), keeping what is still among them chosen."""
        options = [m.id for m in engine.list_models() if m.ready and m.format == ModelFormat.ADAPTER
                   and m.parent_id == source and m.id not in have]
        return gr.update(choices=options, value=[a for a in chosen or [] if a in options])

    model.change(adapter_options, [model, adapters], [adapters], show_progress="hidden")

    def exports_with_adapters() -> list[str]:
        return [m.id for m in engine.list_models() if m.ready and engine.adapters_of(m)]

    def addable(export_id, chosen):
        if not export_id or not engine.store.has_model(export_id):
            return gr.update(choices=[], value=[])
        export = engine.get_model(export_id)
        return adapter_options(export.parent_id, chosen, set(engine.adapters_of(export)))

    add_export.change(addable, [add_export, add_adapters], [add_adapters], show_progress="hidden")

    @ui_errors
    def do_check(*values):
        config = form.config(values)
        facts = engine.check_quantize(config)
        return (f"OK: **{facts['architecture']}**, widths {', '.join(map(str, facts['widths']))}; will write "
                f"**{config.output_id()}**, needs about {facts['bytes_needed'] / 1e9:.2f} GB of disk while "
                "building.")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(form.config(values))
        return run_id, f"Started run {run_id}."

    @ui_errors
    def do_gguf(*values):
        run_id = engine.start_run(gguf_form.config(values))
        return run_id, f"Started GGUF run {run_id}."

    @ui_errors
    def do_add(*values):
        run_id = engine.start_run(add_form.config(values))
        return run_id, f"Started run {run_id}: adding adapters."

    @ui_errors
    def do_sweep(*values):
        run_id = engine.start_run(sweep_form.config(values))
        return run_id, f"Started sweep run {run_id}."

    # only what applies to the chosen precision and method is on screen (an Olive pass means nothing to affine)
    applies = {"method": lambda p, m: p == "int4", "block_size": lambda p, m: p == "int4",
               "olive_pass": lambda p, m: p == "int4" and m == "olive",
               "symmetric": lambda p, m: p == "int4" and m == "builder",
               "higher_precision": lambda p, m: p == "int4" and m == "builder",
               **{name: (lambda p, m: p == "int4" and m == "affine")
                  for name in ("kernel", "fit", "calibration_path", "calibration_examples", "fine_tune_delta")}}

    def show_applicable(precision, method):
        return [gr.update(visible=rule(precision, method)) for rule in applies.values()]

    precision_method = [form.widgets["precision"], form.widgets["method"]]
    for widget in precision_method:
        widget.change(show_applicable, precision_method, [form.widgets[n] for n in applies], show_progress="hidden")

    check.click(do_check, form.inputs, [check_text])
    start.click(do_start, form.inputs, [run_state, check_text])
    sweep.click(do_sweep, sweep_form.inputs, [run_state, check_text])
    gguf_start.click(do_gguf, gguf_form.inputs, [run_state, check_text])
    add_start.click(do_add, add_form.inputs, [run_state, check_text])

    shown = gr.State("")  # what was drawn last: polling redraws only when the candidates change

    def show_run(run_id, last=""):
        if not run_id:
            return gr.update(visible=False), gr.update(visible=False), gr.update(choices=[], value=None), \
                exports_rows(engine), gr.update(visible=False), gr.skip(), "", gr.Timer(active=False)
        run = engine.get_run(int(run_id))
        signature = (f"{run.id}:{run.status.value}:{len(run.summary.get('candidates', []))}:"
                     f"{len(run.summary.get('adapters', []))}")
        if signature == last:
            return (gr.skip(),) * 6 + (last, gr.Timer(active=not run.status.final))
        rows = run.summary.get("candidates", [])
        fig = pareto_figure(rows, run.summary.get("max_ppl_ratio") or run.config.get("max_ppl_ratio"))
        left = [r["variant"] for r in rows if r["variant"] != run.summary.get("chosen")] if run.status.final else []
        return (gr.update(value=fig, visible=fig is not None),
                gr.update(value=candidate_rows(run.summary), visible=bool(rows)),
                gr.update(choices=left, value=None), exports_rows(engine),
                gr.update(value=adapter_rows(run.summary), visible=bool(run.summary.get("adapters"))),
                gr.update(choices=exports_with_adapters()) if run.status.final else gr.skip(), signature,
                gr.Timer(active=not run.status.final))

    timer = gr.Timer(3.0, active=False)
    shows = [pareto, cand_table, pick, exports, adapter_table, add_export, shown, timer]
    timer.tick(show_run, [run_state, shown], shows, show_progress="hidden")
    run_state.change(show_run, [run_state], shows)

    @ui_errors
    def do_register(run_id, variant, name):
        if not run_id or not variant:
            raise gr.Error("Pick a candidate of a finished sweep.")
        record = engine.register_candidate(int(run_id), variant, name)
        gr.Info(f"Registered '{record.id}'.")
        return exports_rows(engine)

    register.click(do_register, [run_state, pick, pick_name], [exports])

    def refresh(current, current_task, current_export):
        sources = [m for m in model_choices(engine)
                   if engine.get_model(m).format in {ModelFormat.HF, ModelFormat.ADAPTER}]
        with_adapters = exports_with_adapters()
        return (gr.update(choices=sources, value=current if current in sources else (sources[0] if sources else None)),
                exports_rows(engine), task_choices(engine, current_task),
                gr.update(choices=with_adapters, value=current_export if current_export in with_adapters else None))

    return {"refresh": (refresh, [model, task, add_export], [model, exports, task, add_export]),
            "forms": [form, sweep_form, gguf_form, add_form]}
