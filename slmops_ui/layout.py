"""build_app(engine): the header, the preparation banner and the tabs. No logic beyond wiring."""
from __future__ import annotations

import gradio as gr

from . import navigation
from .api import register_api
from .clone import build_clone_row, restore_active, wire
from .job_indicator import build_job_indicator
from .tables import eta_text
from .tabs.benchmark import build_benchmark_tab
from .tabs.chat import build_chat_tab
from .tabs.distill import build_distill_tab
from .tabs.evaluate import build_evaluate_tab
from .tabs.finetune import build_finetune_tab
from .tabs.models import build_models_tab
from .tabs.quantize import build_quantize_tab
from .tabs.runs import build_runs_tab
from .tabs.serve import build_serve_tab



def banner_poll_s(text: str) -> float:
    return 2.5 if text else 10.0


def banner_text(engine) -> str:
    """What is being prepared right now, with its run's progress; empty when nothing is."""
    lines = []
    for m in engine.list_models():
        if m.status == "preparing" and m.run_id:
            run = engine.get_run(m.run_id)
            eta = f", {eta_text(run)}" if eta_text(run) else ""
            lines.append(f"Preparing model **{m.id}** (run {run.id}): {run.stage} — {run.progress:.0%}{eta}")
    return "\n\n".join(lines)


def build_app(engine) -> gr.Blocks:
    qlora_reason = engine.qlora_unavailable_reason()
    with gr.Blocks(title="SLMOps Studio") as app:
        gr.Markdown("# SLMOps Studio\nDistill, fine-tune, quantize, benchmark and chat with small language models "
                    f"— all local. Workspace: `{engine.settings.home}`", elem_id="header")
        banner = gr.Markdown(banner_text(engine), elem_id="banner", visible=bool(banner_text(engine)))
        jobs_refresh, jobs_outputs = build_job_indicator(engine)
        preparing = gr.State("")
        clone_state = gr.State(None)  # a run's {kind, config}, set by the Runs tab's "Clone into its tab"
        # the job tabs and the others, in order: (label, id, builder); a tab returns its "refresh" and, for job
        # tabs, its "forms" (slmops_ui.forms.ConfigForm: the widgets of a config's fields, and the job kinds whose
        # runs a clone copies into them)
        pages = [("Chat", "chat", build_chat_tab), ("Distill", "distill", build_distill_tab),
                 ("Fine-tune", "finetune", lambda e: build_finetune_tab(e, qlora_reason)),
                 ("Quantize", "quantize", build_quantize_tab), ("Evaluate", "evaluate", build_evaluate_tab),
                 ("Benchmark", "benchmark", build_benchmark_tab), ("Serve", "serve", build_serve_tab),
                 ("Models", "models", build_models_tab)]
        built = {}
        nav = navigation.begin()  # next-step buttons of the job panels, wired to the tabs once all exist
        with gr.Tabs() as tabs:
            for label, tab_id, build in pages:
                with gr.Tab(label, id=tab_id):
                    built[tab_id] = build(engine)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs = build_runs_tab(engine)
                forms = {tab_id: tab.get("forms", []) for tab_id, tab in built.items()}
                tab_of_kind = {kind: tab_id for tab_id, tab_forms in forms.items() for form in tab_forms
                               for kind in form.kinds}
                cloner = build_clone_row(engine, clone_state, tabs, tab_of_kind)

        # The Runs table polls every 2 s only while its tab is on screen (it ticked on every tab: each tick is an
        # event whose loading status Gradio's frontend walks through every component, for a table nobody saw).
        def runs_polling(evt: gr.SelectData):
            return gr.Timer(active=evt.value == "Runs")

        tabs.select(runs_polling, None, [runs["timer"]], show_progress="hidden")
        runs_tab.select(*runs["shown"], show_progress="hidden")
        wire(clone_state, [form for tab_forms in forms.values() for form in tab_forms])
        navigation.connect(nav, tabs, engine)
        refreshers = [tab["refresh"] for tab in built.values()] + [cloner["refresh"]]
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
                return (gr.skip(), previous, gr.skip(), *([gr.skip()] * (len(jobs_outputs) + len(refresh_outputs))))
            # something started or finished preparing: the model lists and the job line change too
            return (gr.update(value=text, visible=bool(text)), text, gr.Timer(banner_poll_s(text)),
                    *jobs_refresh(), *refresh_all(*values))

        # every 2.5 s while a model is being prepared; every 10 s otherwise (a poll costs the browser ~0.05 cores
        # and the server ~0.02 at 2.5 s, taken from whatever job runs beside them)
        banner_timer = gr.Timer(banner_poll_s(banner_text(engine)))
        banner_timer.tick(poll_banner, [preparing, *refresh_inputs],
                          [banner, preparing, banner_timer, *jobs_outputs, *refresh_outputs], show_progress="hidden")
        def on_load(*values):
            # the page was built with the banner of the app's first start: say what is being prepared now
            text = banner_text(engine)
            return (gr.update(value=text, visible=bool(text)), text, gr.Timer(banner_poll_s(text)),
                    *refresh_all(*values))

        loaded = app.load(on_load, refresh_inputs, [banner, preparing, banner_timer, *refresh_outputs])
        restore_active(engine, loaded, [form for tab_forms in forms.values() for form in tab_forms])
        public = register_api(engine)
    # The UI's own events are not the API: view_api() lists only register_api's names. "undocumented", not
    # "private": a client can still drive them as the page does (tests/test_concurrency.py loads the app that way).
    for fn in app.fns.values():
        if fn.api_name not in public:
            fn.api_visibility = "undocumented"
    return app
