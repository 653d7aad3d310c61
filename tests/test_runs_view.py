"""Runs tab: SQL filters and counts, the index migration, the loss overlay, the config comparison and the exports."""
import csv
import json
import os

import pytest
from sqlite_utils import Database

from engine.errors import InvalidInput
from engine.records import MetricPoint, RunRecord, RunStatus
from engine.store import Store, migrations
from slmops_ui.charts import overlay_loss_figure
from slmops_ui.run_compare import (config_compare_html, config_table, differing_keys, flatten, steps_per_epoch,
                                   write_exports)
from slmops_ui.tabs.runs import parse_filters, table_view

# (kind, status, model, created_at): ids 1..6 in this order
RUNS = [
    ("finetune", "succeeded", "smol", "2025-01-10T08:00:00.000+00:00"),
    ("distill", "failed", "smol", "2025-02-01T00:00:00.000+00:00"),
    ("finetune", "failed", "qwen", "2025-02-28T23:59:59.999+00:00"),
    ("quantize", "succeeded", "qwen", "2025-03-01T00:00:00.000+00:00"),
    ("finetune", "succeeded", "smol", "2025-03-15T12:00:00.000+00:00"),
    ("benchmark", "running", None, "2025-04-02T09:30:00.000+00:00"),
]


def fill(store: Store, runs=RUNS) -> list[int]:
    ids = []
    for kind, status, model, created in runs:
        rid = store.add_run(kind, json.dumps({"model_id": model, "epochs": 1.0}), "x:y", model)
        store.update_run(rid, status=status, created_at=created)
        ids.append(rid)
    return ids


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db")
    fill(s)
    return s


@pytest.mark.parametrize("filters, expected", [
    ({}, [6, 5, 4, 3, 2, 1]),
    ({"kind": "finetune"}, [5, 3, 1]),
    ({"status": "failed"}, [3, 2]),
    ({"status": RunStatus.SUCCEEDED}, [5, 4, 1]),
    ({"kind": "finetune", "status": "succeeded"}, [5, 1]),
    ({"model_id": "qwen"}, [4, 3]),
    ({"since": "2025-02-01", "until": "2025-02-28"}, [3, 2]),  # both days included, whole days
    ({"since": "2025-03-01"}, [6, 5, 4]),
    ({"until": "2025-01-10"}, [1]),
    ({"until": "2025-02-01T00:00:00"}, [2, 1]),  # a date-time bound is exact (UTC when no offset)
    ({"since": "2025-02-01T01:00:00+01:00", "until": "2025-02-01T00:00:00Z"}, [2]),
    ({"kind": "finetune", "model_id": "smol", "since": "2025-02-01"}, [5]),
    ({"kind": "nothing"}, []),
])
def test_filters_return_the_matching_runs_newest_first_and_count_agrees(store, filters, expected):
    assert [r.id for r in store.list_runs(limit=None, **filters)] == expected
    assert store.count_runs(**filters) == len(expected)


def test_limit_keeps_the_newest_and_bad_dates_are_refused(store):
    assert [r.id for r in store.list_runs(limit=2, kind="finetune")] == [5, 3]
    assert [r.id for r in store.list_runs(2)] == [6, 5]  # the old positional call still works
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        store.list_runs(since="March 1st")
    assert store.run_facets() == {"kind": ["benchmark", "distill", "finetune", "quantize"],
                                  "status": ["failed", "running", "succeeded"], "model_id": ["qwen", "smol"]}


def test_engine_list_runs_passes_filters_through(engine):
    fill(engine.store)
    assert [r.id for r in engine.list_runs()] == [6, 5, 4, 3, 2, 1]
    assert [r.id for r in engine.list_runs(limit=1)] == [6]
    assert [r.id for r in engine.list_runs(kind="finetune", status="failed", model_id="qwen", since="2025-02-28",
                                           until="2025-02-28")] == [3]


def test_migration_adds_indexes_and_keeps_existing_rows(tmp_path):
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m002_run_filter_indexes")  # a workspace from before the filters
    db["runs"].insert({"kind": "finetune", "status": "succeeded", "model_id": "m", "config_json": "{}",
                       "created_at": "2025-01-01T00:00:00.000+00:00", "summary_json": '{"a": 1}'})
    db.close()
    store = Store(path)
    assert [m.name for m in migrations.applied(store.db)] == ["m001_initial", "m002_run_filter_indexes",
                                                              "m003_run_queue", "m004_tasks", "m005_conversations",
                                                              "m006_requests", "m007_run_parent"]
    assert [m.name for m in migrations.applied(Store(path).db)][-1] == "m007_run_parent"  # applied once
    assert store.run_row(1)["exclusive"] == 0  # an old run gets the queue column with its default
    assert store.get_run(1).parent_run_id is None  # …and no study
    indexed = {tuple(i.columns) for i in store.db["runs"].indexes}
    assert {("kind",), ("status",), ("model_id",), ("created_at",)} <= indexed
    [run] = store.list_runs()
    assert (run.kind, run.summary) == ("finetune", {"a": 1})
    plan = " ".join(str(r) for r in store.db.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM runs WHERE kind = ?", ["x"]).fetchall())
    assert "idx_runs_kind" in plan


def test_tab_view_shows_newest_and_counts_all(engine):
    ids = fill(engine.store, RUNS * 100)  # 600 runs: more than the table holds
    rows, line, runs = table_view(engine, {})
    assert len(rows) == 500 and rows[0][0] == ids[-1] and line.startswith("Showing 500 of 600 matching runs")
    rows, line, _ = table_view(engine, parse_filters("quantize", "any", "any", "", "")[0])
    assert len(rows) == 100 and line.startswith("Showing 100 of 100 ")
    filters, problem = parse_filters("any", "any", "any", "2025-13-01", " 2025-02-01 ")
    assert filters == {"kind": None, "status": None, "model_id": None, "since": None, "until": "2025-02-01"}
    assert "'from' date '2025-13-01' is not YYYY-MM-DD" in problem


# ---- the loss overlay -----------------------------------------------------------------------------------------
def points(run_id, **series):
    return [MetricPoint(run_id, step, name, value, "t") for name, values in series.items() for step, value in values]


def test_overlay_has_one_trace_per_run_and_loss_kind_with_step_or_epoch_x():
    curves = {
        "#1 finetune": points(1, train_loss=[(10, 2.0), (20, 1.5)], eval_loss=[(20, 1.7)],
                              learning_rate=[(10, 1e-3)]),
        "#2 distill": points(2, train_loss=[(5, 3.0), (10, 2.5)], kd_loss=[(10, 0.9)], ce_loss=[(10, 2.1)]),
    }
    fig = overlay_loss_figure(curves, "step")
    assert [t.name for t in fig.data] == ["#1 finetune · train loss", "#1 finetune · eval loss",
                                          "#2 distill · train loss", "#2 distill · KD loss (train)",
                                          "#2 distill · CE loss (train)"]
    assert list(fig.data[0].x) == [10, 20] and fig.layout.xaxis.title.text == "optimizer step"
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color  # colour = run
    assert [t.line.dash for t in fig.data[2:]] == ["solid", "dot", "dashdot"]  # dash = loss kind
    assert fig.layout.yaxis.title.text == "loss (nats/token)"

    by_epoch = overlay_loss_figure(curves, "epoch", {"#1 finetune": 10.0, "#2 distill": 5.0})
    assert list(by_epoch.data[0].x) == [1.0, 2.0] and list(by_epoch.data[2].x) == [1.0, 2.0]
    assert by_epoch.layout.xaxis.title.text.startswith("epoch")

    fallback = overlay_loss_figure(curves, "epoch", {"#1 finetune": 10.0, "#2 distill": None})
    assert list(fallback.data[0].x) == [10, 20] and fallback.layout.xaxis.title.text == "optimizer step"
    assert "epoch unknown for #2 distill" in fallback.layout.title.text

    assert overlay_loss_figure({"#3 quantize": points(3, size_mb=[(0, 1.0)])}) is None
    mixed = overlay_loss_figure({**curves, "#3 quantize": []}, "epoch", {"#1 finetune": 10.0, "#2 distill": 5.0})
    assert len(mixed.data) == 5 and list(mixed.data[0].x) == [1.0, 2.0]  # a run without loss does not block epochs
    assert "no loss logged by #3 quantize" in mixed.layout.title.text


def record(rid, kind="finetune", config=None, summary=None, status="succeeded") -> RunRecord:
    return RunRecord(id=rid, kind=kind, status=RunStatus(status), model_id="smol", config_json=json.dumps(config or {}),
                     created_at="2025-01-01T00:00:00.000+00:00", started_at="2025-01-01T00:00:00.000+00:00",
                     finished_at="2025-01-01T00:01:30.000+00:00", progress=1.0, stage="done", eta_s=None,
                     error=None, pid=None, cancel_requested=False, summary=summary or {})


def test_steps_per_epoch_from_epoch_metric_examples_or_finished_steps():
    assert steps_per_epoch(record(1), points(1, epoch=[(25, 0.5), (50, 1.0)])) == 50
    # the Trainer's formula: ceil(ceil(10 examples / 4 per batch) / 2 accumulated) = 2
    assert steps_per_epoch(record(1, config={"batch_size": 4, "grad_accum": 2}, summary={"train_examples": 10})) == 2
    assert steps_per_epoch(record(1, config={"epochs": 2.0, "max_steps": 0}, summary={"steps": 30})) == 15
    assert steps_per_epoch(record(1, config={"epochs": 2.0, "max_steps": 0}, summary={"steps": 30},
                                  status="cancelled")) is None
    assert steps_per_epoch(record(1, config={"epochs": 2.0, "max_steps": 7}, summary={"steps": 7})) is None


# ---- the config comparison ------------------------------------------------------------------------------------
def test_config_comparison_marks_exactly_the_differing_keys():
    a = {"model_id": "smol", "learning_rate": 1e-3, "columns": {"prompt": "q"}, "seed": 42, "layers": [1, 2]}
    b = {"model_id": "smol", "learning_rate": 5e-4, "columns": {"prompt": "q"}, "seed": 42, "layers": [1, 3],
         "alpha": 0.5}
    assert flatten({"a": {"b": 1, "c": {}}}) == {"a.b": 1, "a.c": {}}
    assert [k for k, _, _ in config_table([a, b])] == ["model_id", "learning_rate", "columns.prompt", "seed",
                                                       "layers", "alpha"]
    assert differing_keys([a, b]) == ["learning_rate", "layers", "alpha"]
    assert differing_keys([a, dict(a)]) == []

    page = config_compare_html([record(1, config=a), record(2, "distill", config=b)])
    diff_rows = [row for row in page.split("<tr")[1:] if 'class="cfg-diff"' in row]
    assert [row.split("monospace\">")[1].split("<")[0] for row in diff_rows] == ["learning_rate", "layers", "alpha"]
    assert all("background:" in row for row in diff_rows)  # visible without the app's stylesheet
    assert "#1 finetune" in page and "#2 distill" in page and "—" in page and "3 of 6 settings differ" in page
    only = config_compare_html([record(1, config=a), record(2, config=b)], only_differing=True)
    assert only.count("<tr") == 4  # the header and the three differing rows
    assert config_compare_html([]) == ""


# ---- exports --------------------------------------------------------------------------------------------------
def test_export_writes_the_filtered_runs_to_csv_and_json(store, tmp_path):
    store.merge_summary(5, {"eval_loss": 1.25, "hardware": {"cpu": "x86"}, "results": [{"a": 1}]})
    runs = store.list_runs(limit=None, kind="finetune", status="succeeded")
    csv_path, json_path = write_exports(runs, tmp_path / "exports")
    assert csv_path.parent.parent == tmp_path / "exports"
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["5", "1"] and {r["kind"] for r in rows} == {"finetune"}
    assert rows[0]["summary.eval_loss"] == "1.25" and rows[0]["summary.hardware.cpu"] == "x86"
    assert json.loads(rows[0]["summary.results"]) == [{"a": 1}] and rows[1]["summary.eval_loss"] == ""
    assert json.loads(rows[0]["config_json"]) == {"model_id": "smol", "epochs": 1.0}
    assert list(rows[0])[:9] == ["id", "kind", "status", "model", "created", "started", "finished", "duration_s",
                                 "progress"]
    records = json.loads(json_path.read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == [5, 1] and records[0]["config"]["model_id"] == "smol"
    assert records[0]["summary.eval_loss"] == 1.25 and records[0]["status"] == "succeeded"


def test_run_metrics_get_one_panel_per_family_so_a_speed_does_not_flatten_the_losses():
    from slmops_ui.charts import metrics_figure

    points = [MetricPoint(1, step, name, value, "") for step in (1, 2, 3)
              for name, value in (("train_loss", 2.0 / step), ("eval_loss", 2.5 / step),
                                  ("train_tokens_per_s", 30.0 + step), ("learning_rate", 1e-3), ("epoch", step / 3))]
    fig = metrics_figure(points)
    panels = {t.yaxis for t in fig.data}
    by_name = {t.name: t.yaxis for t in fig.data}
    assert len(panels) == 3 and "epoch" not in by_name
    assert by_name["train_loss"] == by_name["eval_loss"] != by_name["train_tokens_per_s"]
    assert metrics_figure([MetricPoint(1, 1, "x", 1.0, "")]) is None  # one point is no line
    with_norm = metrics_figure(points + [MetricPoint(1, s, "grad_norm", 1.0 / s, "") for s in (1, 2, 3)])
    assert "grad_norm" in [a.text for a in with_norm.layout.annotations]  # the panel is named after what it holds


def test_a_long_model_error_is_cut_in_the_table_and_shown_whole_in_the_details():
    from types import SimpleNamespace

    from slmops_ui.tables import MODEL_HEADERS, model_rows

    failed = SimpleNamespace(id="m", status="failed", error="conversion failed: " + "x" * 300, format="hf",
                             architecture="", params=None, size_bytes=None, source="gguf", parent_id=None,
                             created_at="2026-12-02T10:00:00.000+00:00", path="/p")
    row = model_rows([failed])[0]
    assert len(row) == len(MODEL_HEADERS) and row[1].startswith("failed: conversion failed") and len(row[1]) < 60


def test_a_clone_proposes_a_free_output_name(tmp_path):
    from types import SimpleNamespace

    from slmops_ui.clone import fresh_name

    taken = {"ft-json", "ft-json-merged", "ft-json-2"}
    engine = SimpleNamespace(store=SimpleNamespace(has_model=lambda name: name in taken))
    assert fresh_name(engine, "ft-json") == "ft-json-3"
    assert fresh_name(engine, "ft-json-2") == "ft-json-3" and fresh_name(engine, "other") == "other-2"


def test_a_finished_runs_summary_names_every_figure_in_words():
    from slmops_ui.job_panel import comparison_table, summary_line, task_line

    finetune = {"trainable_pct": 0.241, "train_examples": 400, "score_before": 0.0, "eval_loss_before": 2.1,
                "train_s": 610.2, "steps": 200, "train_loss": 0.41, "train_tokens_per_s": 310.5, "score_after": 0.88,
                "eval_loss_after": 0.31, "wall_s": 1500.0}
    line = summary_line("finetune", finetune)
    assert "held-out score after: **0.88**" in line and "trainable parameters (%): 0.241" in line
    assert " = " not in line and "_" not in line  # no raw `key = value`
    quantize = {"variant": "int4", "size_mb": 60.1, "answer": "Paris", "task": "request_to_json",
                "task_score_source": 0.87, "task_ci_low_source": 0.79, "task_ci_high_source": 0.922,
                "task_score_export": 0.86, "task_ci_low_export": 0.78, "task_ci_high_export": 0.915,
                "task_retention": 0.9885, "dropped_not_json": 3}
    line = summary_line("quantize", quantize)
    assert "task_score" not in line and "task retention (export ÷ source): 0.9885" in line
    assert "dropped (not json): 3" in line
    assert task_line(quantize) == ("\n\nTask score, 95 % interval: source **0.870** (0.790–0.922) → export "
                                   "**0.860** (0.780–0.915)")
    # a size sweep: one teacher, its students in a chart, no teacher/student table with an empty side
    sweep = {"teacher_params_m": 134.5, "task_score_teacher": 0.88, "smallest_at_90": "t-student-run4-4l",
             "students": [{"layers": 4}], "wall_s": 1386.2}
    assert comparison_table(sweep) == "" and "None" not in summary_line("distill_sweep", sweep)


def test_a_runs_files_are_served_from_exports_and_copied_again_when_rewritten(engine, tmp_path):
    source = tmp_path / "config.json"
    source.write_text("{}")
    [copy] = engine.export_files(7, [str(source), str(tmp_path / "missing.txt")])
    assert copy == str(engine.settings.home / "exports" / "run7" / "config.json") and open(copy).read() == "{}"
    source.write_text('{"again": 1}')
    os.utime(source, (1, 1))  # a different time stamp: written anew
    assert open(engine.export_files(7, [str(source)])[0]).read() == '{"again": 1}'
