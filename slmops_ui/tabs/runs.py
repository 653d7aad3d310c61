"""Runs tab: the run history from SQLite (filtered in SQL, newest 500 shown), one run's details, cancel and delete,
CSV/JSON export of the filtered runs, and a comparison of several runs (loss curves and configs). Polls and redraws
only when something changed."""
from __future__ import annotations

import json
from datetime import date

import gradio as gr

from engine import JOB_KINDS, NotFound, RunStatus

from ..charts import metrics_figure, overlay_loss_figure
from ..forms import ui_errors
from ..run_compare import config_compare_html, steps_per_epoch, write_exports
from ..tables import RUN_HEADERS, eta_text, fmt_size, run_rows

SHOWN = 500  # rows the table holds; the count line says how many more match
ANY = "any"
MAX_COMPARED = 8


def run_label(run) -> str:
    return f"#{run.id} {run.kind} ({run.status.value})"


def run_choices(runs, keep=()) -> list[tuple[str, int]]:
    """Dropdown choices for `runs`, plus the kept ids (a selection outside the current filter stays selectable)."""
    choices = [(run_label(r), r.id) for r in runs]
    listed = {r.id for r in runs}
    return choices + [(f"#{rid}", rid) for rid in keep if rid not in listed]


def parse_filters(kind, status, model, since, until) -> tuple[dict, str]:
    """Widget values -> engine filters, and a warning for a date that is not YYYY-MM-DD (that date is ignored)."""
    filters = {"kind": kind, "status": status, "model_id": model}
    filters = {k: (None if v in (None, "", ANY) else v) for k, v in filters.items()}
    problems = []
    for name, label, value in (("since", "from", since), ("until", "to", until)):
        text = (value or "").strip()
        try:
            filters[name] = date.fromisoformat(text).isoformat() if text else None
        except ValueError:
            filters[name] = None
            problems.append(f"'{label}' date '{text}' is not YYYY-MM-DD and is ignored")
    return filters, "; ".join(problems)


def query_view(engine, filters: dict, limit: int = SHOWN) -> tuple[list, int]:
    """The newest `limit` matching runs and how many match in all (counted only when the page is full)."""
    runs = engine.list_runs(limit=limit, **filters)
    total = len(runs) if len(runs) < limit else engine.count_runs(**filters)
    return runs, total


def count_line(shown: int, total: int, problem: str = "") -> str:
    text = f"Showing {shown:,} of {total:,} matching runs (newest first)."
    return text + (f" ⚠ {problem}." if problem else "")


def table_view(engine, filters: dict, problem: str = "") -> tuple[list[list], str, list]:
    """What the tab draws for a filter: the table rows of the newest 500 matches, the count line, the runs."""
    runs, total = query_view(engine, filters)
    return run_rows(runs), count_line(len(runs), total, problem), runs


def model_choices(engine) -> list[str]:
    return [ANY, *engine.run_facets()["model_id"]]


def build_runs_tab(engine) -> dict:
    kinds = [ANY, *sorted(set(JOB_KINDS) | set(engine.run_facets()["kind"]))]
    with gr.Row(equal_height=True):
        kind = gr.Dropdown(kinds, value=ANY, label="Kind", scale=2, min_width=120)
        status = gr.Dropdown([ANY, *(s.value for s in RunStatus)], value=ANY, label="Status", scale=2, min_width=120)
        model = gr.Dropdown(model_choices(engine), value=ANY, label="Model", scale=3, min_width=140)
        since = gr.Textbox(label="From (UTC date)", placeholder="YYYY-MM-DD", scale=2, min_width=120, max_lines=1)
        until = gr.Textbox(label="To (UTC date)", placeholder="YYYY-MM-DD", scale=2, min_width=120, max_lines=1)
    filter_inputs = [kind, status, model, since, until]
    rows0, line0, runs0 = table_view(engine, {})
    with gr.Row(equal_height=True):
        note = gr.Markdown(line0, elem_id="runs-count")
        export = gr.Button("Export matching runs (CSV + JSON)", scale=0, min_width=260, size="sm")
    downloads = gr.File(label="Exported runs (the whole filtered set)", file_count="multiple", visible=False,
                        interactive=False)
    table = gr.Dataframe(headers=RUN_HEADERS, value=rows0, interactive=False, max_height=560,
                         column_widths=["5%", "10%", "9%", "17%", "13%", "9%", "11%", "26%"],
                         label="Run history (click a row to see it)", wrap=True, elem_id="runs-table")
    signature = gr.State("")  # what the table showed last, so polling redraws only on change
    with gr.Row():
        run_id = gr.Dropdown(label="Run", choices=run_choices(runs0), value=None, scale=1)
        cancel = gr.Button("Cancel run", variant="stop", scale=0)
        delete = gr.Button("Delete run…", scale=0)
        olive = gr.Button("Export as Olive config", scale=0, elem_id="runs-olive")
    olive_files = gr.File(label="Olive config and command (repeat the run with `olive run --config config.json`)",
                          file_count="multiple", visible=False, interactive=False, elem_id="runs-olive-files")
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

    gr.Markdown("### Compare runs")
    with gr.Row(equal_height=True):
        picked = gr.Dropdown(label=f"Runs to compare (up to {MAX_COMPARED})", choices=run_choices(runs0),
                             multiselect=True, max_choices=MAX_COMPARED, value=[], scale=4, elem_id="runs-compare")
        x_axis = gr.Radio(["step", "epoch"], value="step", label="x-axis", scale=1, min_width=140)
        only_diff = gr.Checkbox(label="Only settings that differ", value=False, scale=1, min_width=140)
    compare_plot = gr.Plot(label="Loss curves", visible=False, elem_id="runs-compare-plot")
    compare_note = gr.Markdown("")
    compare_table = gr.HTML("", elem_id="runs-compare-config")
    timer = gr.Timer(2.0, active=False)  # on only while the Runs tab is on screen (layout.py switches it)

    def details(rid):
        if not rid:
            return "", "", [], gr.update(value=None, visible=False), [], ""
        rid = int(rid)
        run = engine.get_run(rid)
        points = engine.run_metrics(rid)
        fig = metrics_figure(points, title=f"Run {rid} metrics")
        eta = f", {eta_text(run)}" if eta_text(run) else ""
        head = (f"### Run {run.id} · {run.kind} · **{run.status.value}**\n"
                f"Model: `{run.model_id or '-'}` · stage: {run.stage} ({run.progress:.0%}{eta})"
                + (f"\n\n**Error:** {run.error}" if run.error else ""))
        arts = [[a.kind, a.path, fmt_size(a.size_bytes), a.model_id or ""] for a in engine.run_artifacts(rid)]
        rows = [[p.name, p.step, round(p.value, 4)] for p in points]
        text = "\n".join(f"{line.time[11:19]} {line.level:7} {line.message}" for line in engine.run_logs(rid))
        return (head, json.dumps(run.config, indent=2), arts, gr.update(value=fig, visible=fig is not None), rows,
                text)

    detail_outputs = [header, config, artifacts, plot, metrics, log]

    def existing(ids) -> list[int]:
        """The ids among `ids` whose runs still exist (a run can be deleted while selected)."""
        kept = []
        for rid in ids:
            try:
                engine.get_run(int(rid))
            except NotFound:
                continue  # deleted meanwhile: it simply leaves the selection
            kept.append(int(rid))
        return kept

    def comparison(ids, axis, only):
        ids = existing(ids or [])
        if not ids:
            return gr.update(value=None, visible=False), "Pick two or more runs to overlay their loss curves.", ""
        runs = [engine.get_run(rid) for rid in ids]
        curves, per_epoch = {}, {}
        for run in runs:
            points = engine.run_metrics(run.id)
            label = f"#{run.id} {run.kind}"
            curves[label], per_epoch[label] = points, steps_per_epoch(run, points)
        fig = overlay_loss_figure(curves, axis, per_epoch, title=f"Loss curves of {len(runs)} run(s)")
        text = "" if fig is not None else "None of the selected runs logged a loss (train, eval, KD or CE)."
        return gr.update(value=fig, visible=fig is not None), text, config_compare_html(runs, only)

    compare_outputs = [compare_plot, compare_note, compare_table]

    def redraw(sig, rid, chosen, axis, only, *values, force=False):
        """Table, count line, choices, and the details and comparison when they may have changed; with `force`
        (filters changed, a run deleted) everything is redrawn, else only when the runs shown changed."""
        filters, problem = parse_filters(*values)
        runs, total = query_view(engine, filters)
        facets = model_choices(engine)
        new_sig = json.dumps([filters, problem, total, facets,
                              [(r.id, r.status.value, round(r.progress, 3), r.stage) for r in runs]])
        if new_sig == sig and not force:
            return (gr.skip(),) * 5 + (sig,) + (gr.skip(),) * (len(detail_outputs) + len(compare_outputs))
        before = (rid, list(chosen or []))
        chosen = existing(chosen or [])
        rid = (existing([rid]) or [None])[0] if rid else None
        # set the values only when they must change: polling must not fight a user who is picking runs
        keep_values = not force and before == (rid, chosen)
        redraw_details = force or any(r.id == rid for r in runs)
        redraw_compare = force or any(r.id in chosen and not r.status.final for r in runs)
        return (run_rows(runs), count_line(len(runs), total, problem),
                gr.update(choices=run_choices(runs, [rid] if rid else []), **({} if keep_values else {"value": rid})),
                gr.update(choices=run_choices(runs, chosen), **({} if keep_values else {"value": chosen})),
                gr.update(choices=facets), new_sig,
                *(details(rid) if redraw_details else [gr.skip()] * len(detail_outputs)),
                *(comparison(chosen, axis, only) if redraw_compare else [gr.skip()] * len(compare_outputs)))

    view_outputs = [table, note, run_id, picked, model, signature, *detail_outputs, *compare_outputs]
    view_inputs = [signature, run_id, picked, x_axis, only_diff, *filter_inputs]

    @ui_errors
    def apply_filters(*args):
        return redraw(*args, force=True)

    @ui_errors
    def show_run(rid):
        return details(rid)

    def pick_row(evt: gr.SelectData, rows):
        row = rows.iloc[evt.index[0]] if hasattr(rows, "iloc") else rows[evt.index[0]]
        rid = int(row.iloc[0] if hasattr(row, "iloc") else row[0])
        return (gr.update(value=rid), *details(rid))

    def chosen_run(rid, what: str = "a run") -> int:
        if not rid:
            raise gr.Error(f"Pick or click {what} first.")
        return int(rid)

    @ui_errors
    def do_cancel(rid):
        run = engine.cancel_run(chosen_run(rid))
        gr.Info(f"Run {run.id}: cancel requested.")

    @ui_errors
    def ask_delete(rid):
        engine.get_run(chosen_run(rid))
        return gr.update(visible=True)

    @ui_errors
    def do_delete(rid):
        engine.delete_run(int(rid))
        gr.Info(f"Run {rid} deleted.")
        return gr.update(visible=False), None

    @ui_errors
    def do_olive(rid):
        path = engine.olive_config(chosen_run(rid, "a fine-tune or quantize run"))
        gr.Info(f"Olive config of run {rid} written: {path}")
        return gr.update(value=engine.export_files(int(rid), [path, path.parent.parent / "command.txt"]), visible=True)

    @ui_errors
    def do_export(*values):
        filters, problem = parse_filters(*values)
        runs = engine.list_runs(limit=None, **filters)
        if not runs:
            raise gr.Error("No run matches these filters: nothing to export.")
        files = write_exports(runs, engine.settings.home / "exports")
        gr.Info(f"Exported {len(runs):,} runs" + (f" ({problem})" if problem else "") + ".")
        return gr.update(value=[str(f) for f in files], visible=True)

    for widget in (kind, status, model):
        widget.input(apply_filters, view_inputs, view_outputs)
    for box in (since, until):
        box.submit(apply_filters, view_inputs, view_outputs)
        box.blur(apply_filters, view_inputs, view_outputs)
    timer.tick(redraw, view_inputs, view_outputs, show_progress="hidden")
    run_id.input(show_run, [run_id], detail_outputs)
    table.select(pick_row, [table], [run_id, *detail_outputs])
    cancel.click(do_cancel, [run_id], None)
    delete.click(ask_delete, [run_id], [confirm_row])
    confirm.click(do_delete, [run_id], [confirm_row, run_id]).then(apply_filters, view_inputs, view_outputs)
    keep.click(lambda: gr.update(visible=False), None, [confirm_row])
    olive.click(do_olive, [run_id], [olive_files])
    export.click(do_export, filter_inputs, [downloads])
    for trigger in (picked.input, x_axis.change, only_diff.change):  # picked: the user only (redraw sets it too)
        trigger(ui_errors(comparison), [picked, x_axis, only_diff], compare_outputs)
    return {"refresh": (lambda *values: redraw("", None, [], "step", False, *values, force=True), filter_inputs,
                        view_outputs),
            "timer": timer, "shown": (redraw, view_inputs, view_outputs)}
