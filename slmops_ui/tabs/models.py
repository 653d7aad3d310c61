"""Models tab: the registered models, registering another one, deleting one, and a quick self-test run."""
from __future__ import annotations

import gradio as gr

from engine import SelfTestConfig

from ..forms import model_choices, ui_errors
from ..tables import MODEL_HEADERS, model_rows

SOURCES = {"Local HF folder": "local", "GGUF file": "gguf", "Hugging Face Hub id (online only)": "hub",
           "Detect from the text": "auto"}


NUMBER_LABELS = {"variant": "variant", "size_ratio": "size ×source", "ppl_ratio": "perplexity ×source",
                 "decode_tok_s": "decode tok/s", "first_token_agreement": "first-token agreement",
                 "score_after": "task score", "score_before": "task score before", "eval_loss": "eval loss",
                 "heldout_ppl_student": "held-out perplexity", "general_ppl_student": "general perplexity",
                 "params_m": "params (M)", "bench_decode_tok_s": "benchmark decode tok/s",
                 "bench_mc_accuracy": "benchmark MC accuracy"}


def lineage_markdown(tree: dict, depth: int = 0) -> str:
    """A nested list: each model with its format, size and key numbers; the selected one in bold."""
    size = f", {tree['size_bytes'] / 1e6:.0f} MB" if tree.get("size_bytes") else ""
    params = f", {tree['params'] / 1e6:.1f} M params" if tree.get("params") else ""
    numbers = " · ".join(f"{NUMBER_LABELS.get(k, k)} {v}" for k, v in tree["numbers"].items())
    name = f"**{tree['id']}** ◀" if tree["selected"] else f"`{tree['id']}`"
    line = f"{'  ' * depth}- {name} ({tree['format']}{params}{size})" + (f" — {numbers}" if numbers else "")
    return "\n".join([line] + [lineage_markdown(c, depth + 1) for c in tree["children"]])


def build_models_tab(engine) -> dict:
    table = gr.Dataframe(headers=MODEL_HEADERS, value=model_rows(engine.list_models()), interactive=False,
                         label="Registered models", wrap=False, elem_id="models-table")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Register a model")
            source = gr.Radio(list(SOURCES), value="Detect from the text", label="Source")
            ref = gr.Textbox(label="Folder, .gguf file or Hub id", placeholder="/path/to/model or owner/name",
                             elem_id="models-ref",
                             info="Folders need config.json, *.safetensors and a tokenizer. GGUF files are converted "
                                  "to safetensors in a background run.")
            name = gr.Textbox(label="Name (optional)", placeholder="defaults to the folder/file name")
            register = gr.Button("Register", variant="primary", elem_id="models-register")
            result = gr.Markdown("")
        with gr.Column():
            gr.Markdown("### Manage")
            selected = gr.Dropdown(label="Model", choices=model_choices(engine, ready_only=False))
            with gr.Row():
                selftest = gr.Button("Run self-test")
                delete = gr.Button("Delete…", variant="stop")
            with gr.Row(visible=False) as confirm_row:
                confirm = gr.Button("Yes, delete it", variant="stop")
                keep = gr.Button("Keep it")
            manage_result = gr.Markdown("")
            gr.Markdown("### Lineage")
            lineage = gr.Markdown("Pick a model to see its family: base → fine-tunes, students → exports.",
                                  elem_id="lineage")

    @ui_errors
    def show_lineage(model_id):
        if not model_id:
            return "Pick a model to see its family: base → fine-tunes, students → exports."
        model = engine.get_model(model_id)
        error = f"**{model.status}:** {model.error}\n\n" if model.error else ""
        return error + lineage_markdown(engine.lineage(model_id))

    selected.change(show_lineage, [selected], [lineage])

    def refresh(current=None):
        """The table, the model list (it keeps its pick, or picks the first model) and the picked model's lineage,
        so the lineage shows something from the start."""
        models = engine.list_models()
        ids = [m.id for m in models]
        pick = current if current in ids else (ids[0] if ids else None)
        return model_rows(models), gr.update(choices=ids, value=pick), show_lineage(pick)

    @ui_errors
    def do_register(source_label, ref_, name_):
        model = engine.add_model(ref_, name=name_ or None, source=SOURCES[source_label])
        if model.status == "preparing":
            text = f"Registered **{model.id}**; it is being prepared in run {model.run_id} (see the Runs tab)."
        else:
            text = f"Registered **{model.id}** ({model.architecture}, {model.params / 1e6:.1f} M parameters)."
        return (text, *refresh(model.id)[:2])

    register.click(do_register, [source, ref, name], [result, table, selected])

    @ui_errors
    def ask_delete(model_id):
        if not model_id:
            raise gr.Error("Pick a model to delete.")
        model = engine.get_model(model_id)
        where = "its files in the workspace and its record" if model.owned else \
            "its record only (the folder outside the workspace stays)"
        return gr.update(visible=True), f"Delete **{model_id}**? This removes {where}."

    @ui_errors
    def do_delete(model_id):
        engine.delete_model(model_id)
        return (gr.update(visible=False), f"Deleted **{model_id}**.", *refresh()[:2])

    delete.click(ask_delete, [selected], [confirm_row, manage_result])
    confirm.click(do_delete, [selected], [confirm_row, manage_result, table, selected])
    keep.click(lambda: (gr.update(visible=False), "Kept."), None, [confirm_row, manage_result])

    @ui_errors
    def do_selftest(model_id):
        if not model_id:
            raise gr.Error("Pick a model to test.")
        run_id = engine.start_run(SelfTestConfig(model_id=model_id))
        return f"Self-test started as run {run_id}: follow it in the Runs tab."

    selftest.click(do_selftest, [selected], [manage_result])
    return {"refresh": (refresh, [selected], [table, selected, lineage])}
