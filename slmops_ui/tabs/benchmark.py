"""Benchmark tab: pick models of any format, a workload and repetitions; each model is measured in a fresh
process; results as a size-vs-latency scatter (Pareto front, accuracy as colour), bar charts with error bars, a
table, and CSV/JSON downloads."""
from __future__ import annotations

import gradio as gr

from engine import BenchmarkConfig

from ..bench_charts import BAR_METRICS, TABLE_HEADERS, bar_figure, scatter_figure, table_rows
from ..forms import ConfigForm, model_choices, task_choices, ui_errors
from .. import navigation
from ..job_panel import build_job_panel


# The page polls a running benchmark this often. Every poll costs the browser and the server CPU, and on a small
# machine that CPU comes out of the timed decoding: polling every 2-3 s cut measured decode speed by a third on
# 2 cores (see the closing notes of issue #6).
POLL_S = 10.0


def build_benchmark_tab(engine) -> dict:
    run_state = gr.State(None)
    gr.Markdown("Measure speed, memory and quality of any set of models — transformers, adapters and ONNX exports "
                "— the same way. Each model runs in a fresh worker process; greedy decoding; tokenization is not "
                "timed. Quality: **your task's score** when you pick a task (its 95 % interval in the table; the "
                "scatter then uses it as its quality axis), perplexity on Python's own documentation text, the "
                "bundled multiple-choice set (`assets/eval/mc_questions.jsonl`, scored by log-likelihood), and "
                "agreement with the model's source or teacher.")
    form = ConfigForm(BenchmarkConfig, required={"model_ids": "Pick at least one model."})
    with gr.Row():
        models = form.field("model_ids", gr.Dropdown(
            label="Models", choices=[], multiselect=True, elem_id="bench-models",
            info="Any registered models; a model's source/teacher is also run for agreement."))
    navigation.picker("benchmark", models, multiselect=True)
    with gr.Row():
        task = form.field("task", gr.Dropdown(label="Task (optional)", choices=[""], value="", elem_id="bench-task",
                                              info=BenchmarkConfig.model_fields["task"].description))
        form.field("task_limit")
    with gr.Row():
        form.field("prompt_length")
        form.field("gen_length", label="Generation length")
    with gr.Row():
        for name in ("repetitions", "time_budget_s", "warmup", "threads", "prompt_count"):
            form.field(name)
    with gr.Accordion("Prompts and quality", open=False):
        with gr.Row():
            upload = gr.File(label="Upload a prompt set (.jsonl with 'prompt', or any chat dataset)",
                             file_types=[".jsonl", ".json", ".csv", ".parquet"])
            form.field("prompts_path", label="…or a prompt file path")
        with gr.Row():
            form.field("ppl_tokens")
            form.field("mc", label="Multiple-choice accuracy")
            form.field("interleave", label="Interleave the models' timing")
            for name in ("mc_questions", "agreement_prompts", "agreement_tokens", "target_half_width"):
                form.field(name)
    with gr.Row():
        start = gr.Button("Run benchmark", variant="primary", elem_id="bench-start", scale=2)
        past = gr.Dropdown(label="…or show an earlier benchmark run", choices=[], scale=1, elem_id="bench-past")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("benchmark",), chart=False,
                    poll_s=POLL_S)
    scatter = gr.Plot(label="Size vs latency", visible=False, elem_id="bench-scatter")
    table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, visible=False, elem_id="bench-table", wrap=True)
    with gr.Row():
        metric = gr.Dropdown([(v[0], k) for k, v in BAR_METRICS.items()], value="decode_tok_s", label="Bar chart")
        downloads = gr.File(label="Results (CSV and JSON)", file_count="multiple", visible=False)
    bars = gr.Plot(label="Per-metric bars", visible=False, elem_id="bench-bars")
    hardware = gr.Markdown("")

    @ui_errors
    def do_start(*values):
        *fields, upload_ = values
        run_id = engine.start_run(form.config(fields, **({"prompts_path": upload_} if upload_ else {})))
        return run_id, f"Started benchmark run {run_id}."

    start.click(do_start, form.inputs + [upload], [run_state, message])

    shown = gr.State("")  # what was drawn last: polling redraws only when the results change

    def show(run_id, metric_, last=""):
        if not run_id:
            return (gr.update(visible=False),) * 4 + ("", "", gr.Timer(active=False))
        run = engine.get_run(int(run_id))
        if not run.status.final:
            # Drawn once the run has ended: drawing the charts and the table of the models done so far takes the
            # browser's CPU just as the next model's timed decoding starts (on 2 cores, an ONNX export timed right
            # after the first model's charts appeared had std/mean 27 %).
            signature = f"{run.id}:running"
            if signature == last:
                return (gr.skip(),) * 5 + (last, gr.Timer(active=True))
            return ((gr.update(visible=False),) * 4 + (f"Run {run.id}: the charts and the table appear here when it "
                                                       "ends; its progress and each model's numbers are above.",
                                                       signature, gr.Timer(active=True)))
        signature = f"{run.id}:{run.status.value}:{len(run.summary.get('results', []))}:{metric_}"
        if signature == last:
            return (gr.skip(),) * 5 + (last, gr.Timer(active=False))
        rows = run.summary.get("results", [])
        fig = scatter_figure(rows)
        bar = bar_figure(rows, metric_ or "decode_tok_s")
        files = engine.export_files(run.id, [a.path for a in engine.run_artifacts(run.id)
                                             if a.kind.startswith("benchmark_")])
        hw = run.summary.get("hardware") or {}
        hw_text = ("**Hardware/software:** " + " · ".join(f"{k} {v}" for k, v in hw.items() if v is not None)
                   + (f" · wall time {run.summary['wall_s']} s" if run.summary.get("wall_s") else "")) if hw else ""
        return (gr.update(value=fig, visible=fig is not None), gr.update(value=table_rows(rows), visible=bool(rows)),
                gr.update(value=bar, visible=bar is not None), gr.update(value=files or None, visible=bool(files)),
                hw_text, signature, gr.Timer(active=not run.status.final))

    timer = gr.Timer(POLL_S, active=False)
    outputs = [scatter, table, bars, downloads, hardware, shown, timer]
    timer.tick(show, [run_state, metric, shown], outputs, show_progress="hidden")
    run_state.change(show, [run_state, metric], outputs)
    metric.change(show, [run_state, metric], outputs)

    past.input(lambda rid: rid or gr.skip(), [past], [run_state])

    def refresh(current, current_past, current_task):
        every = model_choices(engine)
        kept = [m for m in (current or []) if m in every]
        runs = [(f"#{r.id} · {len(r.config.get('model_ids', []))} models · {r.status.value}", r.id)
                for r in engine.list_runs(limit=200) if r.kind == "benchmark"]
        return (gr.update(choices=every, value=kept),
                gr.update(choices=runs, value=current_past if current_past in [v for _, v in runs] else None),
                task_choices(engine, current_task))

    return {"refresh": (refresh, [models, past, task], [models, past, task]), "forms": [form]}
