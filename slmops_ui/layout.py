"""build_app(engine): the header, the preparation banner and the tabs. No logic beyond wiring."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from .clone import build_clone_row, wire
from .tabs.benchmark import build_benchmark_tab
from .tabs.chat import build_chat_tab
from .tabs.distill import build_distill_tab
from .tabs.finetune import build_finetune_tab
from .tabs.models import build_models_tab
from .tabs.quantize import build_quantize_tab
from .tabs.runs import build_runs_tab

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# System fonts only: the default theme would fetch web fonts, and the app must work with no internet.
THEME = gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])


def banner_text(engine) -> str:
    """What is being prepared right now, with its run's progress; empty when nothing is."""
    lines = []
    for m in engine.list_models():
        if m.status == "preparing" and m.run_id:
            run = engine.get_run(m.run_id)
            eta = f", about {run.eta_s:.0f} s left" if run.eta_s else ""
            lines.append(f"Preparing model **{m.id}** (run {run.id}): {run.stage} — {run.progress:.0%}{eta}")
    return "\n\n".join(lines)


def build_app(engine) -> gr.Blocks:
    from engine.training import qlora_unavailable_reason

    qlora_reason = qlora_unavailable_reason()
    with gr.Blocks(title="SLMOps Studio") as app:
        gr.Markdown("# SLMOps Studio\nDistill, fine-tune, quantize, benchmark and chat with small language models "
                    f"— all local. Workspace: `{engine.settings.home}`", elem_id="header")
        banner = gr.Markdown(banner_text(engine), elem_id="banner", visible=bool(banner_text(engine)))
        preparing = gr.State("")
        clone_state = gr.State(None)  # a run's {kind, config}, set by the Runs tab's "Clone into its tab"
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(engine)
            with gr.Tab("Distill", id="distill"):
                distill = build_distill_tab(engine)
            with gr.Tab("Fine-tune", id="finetune"):
                finetune = build_finetune_tab(engine, qlora_reason)
            with gr.Tab("Quantize", id="quantize"):
                quantize = build_quantize_tab(engine)
            with gr.Tab("Benchmark", id="benchmark"):
                benchmark = build_benchmark_tab(engine)
            with gr.Tab("Models", id="models"):
                models = build_models_tab(engine)
            with gr.Tab("Runs", id="runs"):
                build_runs_tab(engine)
                cloner = build_clone_row(engine, clone_state, tabs)

        wire(clone_state, [form for tab in (finetune, distill, quantize, benchmark) for form in tab["clone"]])
        refreshers = [chat["refresh"], models["refresh"], finetune["refresh"], distill["refresh"],
                      quantize["refresh"], benchmark["refresh"], cloner["refresh"]]
        refresh_outputs = [o for _, _, outs in refreshers for o in outs]
        refresh_inputs = [i for _, ins, _ in refreshers for i in (ins or [])]

        def refresh_all(*values):
            out, pos = [], 0
            for fn, ins, _ in refreshers:
                n = len(ins or [])
                out.extend(fn(*values[pos:pos + n]))
                pos += n
            return out

        def poll_banner(previous, *values):
            text = banner_text(engine)
            if text == previous:
                return (gr.skip(), previous, *([gr.skip()] * len(refresh_outputs)))
            # something started or finished preparing: the model lists change too
            return (gr.update(value=text, visible=bool(text)), text, *refresh_all(*values))

        gr.Timer(2.5).tick(poll_banner, [preparing, *refresh_inputs], [banner, preparing, *refresh_outputs],
                           show_progress="hidden")
        app.load(refresh_all, refresh_inputs, refresh_outputs)
    return app
