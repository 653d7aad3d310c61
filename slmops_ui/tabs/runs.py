"""Runs tab: the run history from SQLite, one run's details, cancel and delete. Polls while runs are active."""
from __future__ import annotations

import json

import gradio as gr

from ..charts import metrics_figure
from ..forms import ui_errors
from ..tables import RUN_HEADERS, fmt_size, run_rows


def run_choices(runs) -> list[tuple[str, int]]:
    return [(f"#{r.id} {r.kind} ({r.status.value})", r.id) for r in runs]


def build_runs_tab(engine) -> dict:
    table = gr.Dataframe(headers=RUN_HEADERS, value=run_rows(engine.list_runs()), interactive=False,
                         label="Run history (click a row to see it)", wrap=True, elem_id="runs-table")
    signature = gr.State("")  # what the table showed last, so polling redraws only on change
    with gr.Row():
        run_id = gr.Dropdown(label="Run", choices=run_choices(engine.list_runs()), value=None, scale=1)
        cancel = gr.Button("Cancel run", variant="stop", scale=0)
        delete = gr.Button("Delete run…", scale=0)
    with gr.Row(visible=False) as confirm_row:
        confirm = gr.Button("Yes, delete this run's history", variant="stop")
        keep = gr.Button("Keep it")
    header = gr.Markdown("")
    with gr.Row():
        with gr.Column():
            config = gr.Code(label="Config", language="json", interactive=False)
            artifacts = gr.Dataframe(headers=["kind", "path", "size", "model"], label="Artifacts",
                                     interactive=False)
        with gr.Column():
            plot = gr.Plot(label="Metrics", visible=False)
            metrics = gr.Dataframe(headers=["name", "step", "value"], label="Metrics", interactive=False)
    log = gr.Textbox(label="Log (tail)", lines=12, max_lines=24, interactive=False, autoscroll=True)
    timer = gr.Timer(2.0)

    def details(rid):
        if not rid:
            return "", "", [], gr.update(value=None, visible=False), [], ""
        rid = int(rid)
        run = engine.get_run(rid)
        points = engine.run_metrics(rid)
        fig = metrics_figure(points, title=f"Run {rid} metrics")
        eta = f", about {run.eta_s:.0f} s left" if run.eta_s and not run.status.final else ""
        head = (f"### Run {run.id} · {run.kind} · **{run.status.value}**\n"
                f"Model: `{run.model_id or '-'}` · stage: {run.stage} ({run.progress:.0%}{eta})"
                + (f"\n\n**Error:** {run.error}" if run.error else ""))
        arts = [[a.kind, a.path, fmt_size(a.size_bytes), a.model_id or ""] for a in engine.run_artifacts(rid)]
        rows = [[p.name, p.step, round(p.value, 4)] for p in points]
        text = "\n".join(f"{line.time[11:19]} {line.level:7} {line.message}" for line in engine.run_logs(rid))
        return (head, json.dumps(run.config, indent=2), arts, gr.update(value=fig, visible=fig is not None), rows,
                text)

    detail_outputs = [header, config, artifacts, plot, metrics, log]

    @ui_errors
    def show_run(rid):
        return details(rid)

    def pick_row(evt: gr.SelectData, rows):
        row = rows.iloc[evt.index[0]] if hasattr(rows, "iloc") else rows[evt.index[0]]
        rid = int(row.iloc[0] if hasattr(row, "iloc") else row[0])
        return (gr.update(choices=run_choices(engine.list_runs()), value=rid), *details(rid))

    def poll(sig, rid):
        runs = engine.list_runs()
        new_sig = json.dumps([(r.id, r.status.value, round(r.progress, 3), r.stage) for r in runs])
        if new_sig == sig:
            return (gr.skip(), gr.skip(), sig, *([gr.skip()] * len(detail_outputs)))
        shown = rid and any(r.id == int(rid) for r in runs)
        return (run_rows(runs), gr.update(choices=run_choices(runs)), new_sig,
                *(details(rid) if shown else [gr.skip()] * len(detail_outputs)))

    @ui_errors
    def do_cancel(rid):
        if not rid:
            raise gr.Error("Pick or click a run first.")
        run = engine.cancel_run(int(rid))
        gr.Info(f"Run {run.id}: cancel requested.")

    @ui_errors
    def ask_delete(rid):
        if not rid:
            raise gr.Error("Pick or click a run first.")
        engine.get_run(int(rid))
        return gr.update(visible=True)

    @ui_errors
    def do_delete(rid):
        engine.delete_run(int(rid))
        runs = engine.list_runs()
        return (gr.update(visible=False), run_rows(runs), gr.update(choices=run_choices(runs), value=None),
                *details(None))

    run_id.input(show_run, [run_id], detail_outputs)
    table.select(pick_row, [table], [run_id, *detail_outputs])
    timer.tick(poll, [signature, run_id], [table, run_id, signature, *detail_outputs], show_progress="hidden")
    cancel.click(do_cancel, [run_id], None)
    delete.click(ask_delete, [run_id], [confirm_row])
    confirm.click(do_delete, [run_id], [confirm_row, table, run_id, *detail_outputs])
    keep.click(lambda: gr.update(visible=False), None, [confirm_row])
    return {"refresh": (lambda: run_rows(engine.list_runs()), None, [table])}
