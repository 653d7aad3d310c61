"""Serve tab: any registered model on an OpenAI-compatible API (/v1/models, /v1/chat/completions) from this
server process, with an optional API key; what is served and how to call it."""
from __future__ import annotations

import gradio as gr

from ..forms import model_choices, ui_errors


def build_serve_tab(engine) -> dict:
    gr.Markdown("Serve a model on an OpenAI-compatible API: any OpenAI client (or curl) can then chat with it. "
                "The same runs headless with `python -m engine serve --model NAME`.")
    with gr.Row():
        serve_model = gr.Dropdown(label="Model", choices=[])
        port = gr.Number(value=8000, precision=0, label="Port", minimum=1024, maximum=65535)
        api_key = gr.Textbox(label="API key (optional)", type="password",
                             info="When set, clients must send 'Authorization: Bearer <key>'.")
    with gr.Row():
        serve_start = gr.Button("Start serving")
        serve_stop = gr.Button("Stop serving", variant="stop")
    serve_text = gr.Markdown("Not serving. The API binds to 127.0.0.1 (this machine only).")

    def serving_text() -> str:
        servers = engine.servers()
        if not servers:
            return "Not serving. The API binds to 127.0.0.1 (this machine only)."
        lines = []
        for s in servers:
            key = " -H 'Authorization: Bearer <key>'" if s.api_key else ""
            lines.append(f"Serving **{', '.join(s.model_ids)}** at `{s.url}`\n\n```\ncurl {s.url}/chat/completions"
                         f" -H 'Content-Type: application/json'{key} -d '{{\"model\": \"{s.model_ids[0]}\", "
                         "\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'\n```")
        return "\n\n".join(lines)

    @ui_errors
    def do_serve(model_id, port_, key):
        if not model_id:
            raise gr.Error("Pick a model to serve.")
        engine.start_server([model_id], "127.0.0.1", int(port_), (key or "").strip() or None)
        return serving_text()

    @ui_errors
    def do_unserve(port_):
        engine.stop_server(int(port_))
        return serving_text()

    serve_start.click(do_serve, [serve_model, port, api_key], [serve_text])
    serve_stop.click(do_unserve, [port], [serve_text])

    def refresh(current):
        every = model_choices(engine)
        return (gr.update(choices=every, value=current if current in every else (every[0] if every else None)),)

    return {"refresh": (refresh, [serve_model], [serve_model])}
