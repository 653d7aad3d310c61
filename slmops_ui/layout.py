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


class EarlyScript:
    """ASGI middleware that puts a script into every HTML page ahead of Gradio's own modules. (Gradio's `head=`
    is added by its JavaScript after those modules have run: too late for assets/quiet_frames.js, whose target
    keeps a reference to `requestAnimationFrame` taken when its module loads.)"""

    MARKER = b'<script type="module"'

    def __init__(self, app, script: str):
        self.app, self.tag = app, f"<script>{script}</script>".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        state: dict = {}

        async def rewrite(message):
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers") or []}
                state["html"] = (headers.get(b"content-type", b"").startswith(b"text/html")
                                 and b"content-encoding" not in headers)
                if not state["html"]:
                    return await send(message)
                state["start"], state["body"] = message, b""
                return None
            if not state.get("html") or message["type"] != "http.response.body":
                return await send(message)
            state["body"] += message.get("body", b"")
            if message.get("more_body"):
                return None
            body = state["body"].replace(self.MARKER, self.tag + self.MARKER, 1)
            start = state["start"]
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, rewrite)


def app_kwargs() -> dict:
    """FastAPI settings for launch(): the early script of EarlyScript (Gradio's idle status tracker asks for 5
    frames a second, not 60)."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(EarlyScript, script=(ASSETS / "quiet_frames.js").read_text())]}


def queued(app: gr.Blocks, concurrency: int = 4) -> gr.Blocks:
    """Gradio's queue, polling less while idle. Its event loop looks for new events every 1 ms and for progress
    every 10 ms when nothing is queued: 0.095 cores of an idle server (measured with py-spy), taken from whatever
    job runs beside it on a small machine. 20 ms / 100 ms keep clicks immediate to a person."""
    app.queue(default_concurrency_limit=concurrency)
    queue = getattr(app, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = 0.02
        queue.progress_update_sleep_when_free = 0.1
    return app


def banner_poll_s(text: str) -> float:
    return 2.5 if text else 10.0


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
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs = build_runs_tab(engine)
                cloner = build_clone_row(engine, clone_state, tabs)

        # The Runs table polls every 2 s only while its tab is on screen (it ticked on every tab: each tick is an
        # event whose loading status Gradio's frontend walks through every component, for a table nobody saw).
        def runs_polling(evt: gr.SelectData):
            return gr.Timer(active=evt.value == "Runs")

        tabs.select(runs_polling, None, [runs["timer"]], show_progress="hidden")
        runs_tab.select(*runs["shown"], show_progress="hidden")
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
                return (gr.skip(), previous, gr.skip(), *([gr.skip()] * len(refresh_outputs)))
            # something started or finished preparing: the model lists change too
            return (gr.update(value=text, visible=bool(text)), text, gr.Timer(banner_poll_s(text)),
                    *refresh_all(*values))

        # every 2.5 s while a model is being prepared; every 10 s otherwise (a poll costs the browser ~0.05 cores
        # and the server ~0.02 at 2.5 s, taken from whatever job runs beside them)
        banner_timer = gr.Timer(banner_poll_s(banner_text(engine)))
        banner_timer.tick(poll_banner, [preparing, *refresh_inputs],
                          [banner, preparing, banner_timer, *refresh_outputs], show_progress="hidden")
        app.load(lambda *values: (gr.Timer(banner_poll_s(banner_text(engine))), *refresh_all(*values)),
                 refresh_inputs, [banner_timer, *refresh_outputs])
    return app
