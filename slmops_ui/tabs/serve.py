"""Serve tab: any registered model on an OpenAI-compatible API (/v1/models, /v1/chat/completions) from this
server process, with an optional API key; what is served and how to call it; and what was served: every request
recorded (by this page's servers and by `python -m engine serve`), charted per minute, the latest listed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import gradio as gr

from ..charts import serve_figure
from ..forms import model_choices, ui_errors

PERIODS = {"last 15 minutes": 15, "last hour": 60, "last 24 hours": 24 * 60, "everything": None}
LATEST_HEADERS = ["started (UTC)", "server", "model", "status", "prompt tokens", "completion tokens",
                  "first token (s)", "total (s)", "decode tok/s", "error"]


def monitoring(engine, model: str, period: str):
    """(figure or None, a line of totals, the latest 50 requests as table rows) for the model ('' = all)."""
    minutes = PERIODS.get(period)
    since = ((datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
             if minutes else None)
    rows = engine.served_requests(model or None, since)
    if not rows:
        return None, f"No requests {'to ' + model + ' ' if model else ''}in this period ({period}).", []
    ok = [r for r in rows if r["status"] == "ok"]
    latency = sorted(r["total_s"] for r in ok if r["total_s"] is not None)
    p95 = f", p95 latency {latency[min(len(latency) - 1, int(0.95 * len(latency)))]:.2f} s" if latency else ""
    plural = "s" if len(rows) != 1 else ""
    line = (f"**{len(rows)} request{plural}** in this period ({period}): {len(ok)} answered, "
            f"{len(rows) - len(ok)} refused, failed or cut off{p95}; "
            f"{sum(r['completion_tokens'] or 0 for r in ok)} tokens written.")
    table = [[r["started_at"][:19].replace("T", " "), r["server"], r["model"], r["status"], r["prompt_tokens"],
              r["completion_tokens"], r["ttft_s"], r["total_s"], r["decode_tok_s"], (r["error"] or "")[:80]]
             for r in rows[:50]]
    return serve_figure(rows, f"Served requests ({period})"), line, table


def build_serve_tab(engine) -> dict:
    gr.Markdown("Serve a model on an OpenAI-compatible API: any OpenAI client (or curl) can then chat with it. "
                "The same runs headless with `python -m engine serve --model NAME`.")
    with gr.Row():
        serve_model = gr.Dropdown(label="Model", choices=[])
        port = gr.Number(value=8000, precision=0, label="Port", minimum=1024, maximum=65535)
        api_key = gr.Textbox(label="API key (optional)", type="password",
                             info="When set, clients must send 'Authorization: Bearer <key>'.")
        at_once = gr.Number(value=4, precision=0, minimum=1, maximum=64, label="Generations at once",
                            info="More requests wait in a queue (on 2 cores more at once only share them).")
        waiting = gr.Number(value=64, precision=0, minimum=0, maximum=10_000, label="Waiting requests at most",
                            info="Past it a request gets 429 with Retry-After (0: none wait).")
    with gr.Row():
        serve_start = gr.Button("Start serving")
        serve_stop = gr.Button("Stop serving", variant="stop")
    serve_text = gr.Markdown("Not serving. The API binds to 127.0.0.1 (this machine only).")
    gr.Markdown("### What was served\nEvery request is recorded in the workspace (model, tokens, time to first "
                "token, total time, decode speed, status; the prompt text only with `engine serve "
                "--record-prompts`). Each server also answers `GET /metrics` (Prometheus) and `GET /health`.")
    with gr.Row():
        watch_model = gr.Dropdown(label="Model", choices=[("all models", "")], value="", elem_id="serve-watch-model")
        period = gr.Dropdown(list(PERIODS), value="last hour", label="Period", elem_id="serve-period")
        watch = gr.Button("↻ Refresh", scale=0, min_width=120, elem_id="serve-refresh")
    totals = gr.Markdown("", elem_id="serve-totals")
    chart = gr.Plot(label="Requests per minute", visible=False, elem_id="serve-chart")
    latest = gr.Dataframe(headers=LATEST_HEADERS, interactive=False, visible=False, elem_id="serve-latest",
                          label="Latest requests (newest first, up to 50)")
    timer = gr.Timer(10.0, active=False)  # ticks while this page serves: the chart follows the traffic

    def show(model_, period_):
        fig, line, table = monitoring(engine, model_, period_)
        return (line, gr.update(value=fig, visible=fig is not None),
                gr.update(value=table, visible=bool(table)), gr.Timer(active=bool(engine.servers())))

    watch_outputs = [totals, chart, latest, timer]
    for trigger in (watch.click, period.change, watch_model.change, timer.tick):
        trigger(show, [watch_model, period], watch_outputs, show_progress="hidden")

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
    def do_serve(model_id, port_, key, at_once_, waiting_):
        if not model_id:
            raise gr.Error("Pick a model to serve.")
        # an export made with adapters serves each of them too, as MODEL:ADAPTER over the one loaded base
        refs = engine.serve_refs([model_id], engine.adapters_of(model_id))
        engine.start_server(refs, "127.0.0.1", int(port_), (key or "").strip() or None,
                            max_concurrency=int(at_once_ or 0), max_queue=int(waiting_ or 0))
        return serving_text()

    @ui_errors
    def do_unserve(port_):
        engine.stop_server(int(port_))
        return serving_text()

    serve_start.click(do_serve, [serve_model, port, api_key, at_once, waiting], [serve_text]).then(
        show, [watch_model, period], watch_outputs, show_progress="hidden")
    serve_stop.click(do_unserve, [port], [serve_text])

    def refresh(current, watched, period_):
        every = model_choices(engine)
        served = sorted({r["model"] for r in engine.served_requests(limit=5000)} | set(every))
        return (gr.update(choices=every, value=current if current in every else (every[0] if every else None)),
                gr.update(choices=[("all models", ""), *served], value=watched if watched in served else ""),
                *show(watched if watched in served else "", period_))

    return {"refresh": (refresh, [serve_model, watch_model, period], [serve_model, watch_model, *watch_outputs])}
