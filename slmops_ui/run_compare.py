"""Pure helpers of the Runs tab: steps per epoch of a run, the side-by-side config table, and CSV/JSON exports."""
from __future__ import annotations

import csv
import html
import json
import math
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .tables import duration_s

MISSING = object()  # a key one run's config does not have (shown as an em dash, and always a difference)


# ---- epochs -------------------------------------------------------------------------------------------------------
def steps_per_epoch(run, points=()) -> float | None:
    """Optimizer steps per pass over the training data, or None when the run does not tell.

    In order of trust: an `epoch` metric (the Trainer's own count), the number of training examples with the batch
    settings (the Trainer's formula), or a finished epoch-bounded run's final step count divided by its epochs."""
    epochs = [(p.step, p.value) for p in points if p.name == "epoch" and p.step > 0 and p.value > 0]
    if epochs:
        step, epoch = max(epochs)
        return step / epoch
    config, summary = run.config, run.summary
    batch, accum = config.get("batch_size"), config.get("grad_accum") or 1
    examples, world = summary.get("train_examples"), summary.get("world_size") or 1
    if batch and examples:
        batches = math.ceil(math.ceil(examples / world) / batch)  # each process's dataloader length
        return float(max(math.ceil(batches / accum), 1))
    if (run.status.value == "succeeded" and not config.get("max_steps") and config.get("epochs")
            and summary.get("steps")):
        return summary["steps"] / config["epochs"]
    return None


# ---- config comparison --------------------------------------------------------------------------------------------
def flatten(value, prefix: str = "") -> dict:
    """Nested dicts as dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); lists and scalars stay values."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {}
    flat = {}
    for key, inner in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(inner, dict) and inner:
            flat.update(flatten(inner, name))
        else:
            flat[name] = inner
    return flat


def config_table(configs: list[dict]) -> list[tuple[str, list, bool]]:
    """(key, one value per config or MISSING, differs) for the union of the flattened keys, in first-seen order."""
    flats = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    table = []
    for key in keys:
        values = [f.get(key, MISSING) for f in flats]
        canon = {json.dumps(v, sort_keys=True, default=str) if v is not MISSING else "\0missing" for v in values}
        table.append((key, values, len(canon) > 1))
    return table


def differing_keys(configs: list[dict]) -> list[str]:
    return [key for key, _, differs in config_table(configs) if differs]


DIFF_STYLE = "background:#fff3cd;color:#3d2e00"  # visible on light and dark themes without any stylesheet
CELL = "padding:4px 10px;border-bottom:1px solid #8884;vertical-align:top;text-align:left"


def _cell_text(value) -> str:
    if value is MISSING:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def config_compare_html(runs, only_differing: bool = False) -> str:
    """One column per run, one row per config key (nested keys dotted); rows whose values differ carry the
    `cfg-diff` class and an inline highlight. Empty string for no runs."""
    if not runs:
        return ""
    table = config_table([r.config for r in runs])
    n_diff = sum(differs for _, _, differs in table)
    shown = [row for row in table if row[2] or not only_differing]
    head = "".join(f'<th style="{CELL}">#{r.id} {html.escape(r.kind)}<br><small>{html.escape(r.model_id or "")} · '
                   f'{html.escape(r.status.value)}</small></th>' for r in runs)
    body = []
    for key, values, differs in shown:
        attrs = f' class="cfg-diff" style="{DIFF_STYLE}"' if differs else ""
        cells = "".join(f'<td style="{CELL};word-break:break-word">{html.escape(_cell_text(v))}</td>' for v in values)
        body.append(f'<tr{attrs}><td style="{CELL};font-family:monospace">{html.escape(key)}</td>{cells}</tr>')
    note = (f"<p>{n_diff} of {len(table)} settings differ (highlighted)"
            + ("; only those are shown" if only_differing else "") + ".</p>")
    return (f'<div class="cfg-compare" style="overflow-x:auto">{note}<table style="border-collapse:collapse;'
            f'width:100%;font-size:0.9em"><thead><tr><th style="{CELL}">setting</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# ---- exports ------------------------------------------------------------------------------------------------------
EXPORT_COLUMNS = ["id", "kind", "status", "model", "created", "started", "finished", "duration_s", "progress",
                  "stage", "error"]


def export_row(run) -> dict:
    """One run as a flat record: the table's facts, `summary.*` fields (nested dicts dotted, lists as JSON) and the
    config as JSON text."""
    d = duration_s(run)
    row = {"id": run.id, "kind": run.kind, "status": run.status.value, "model": run.model_id or "",
           "created": run.created_at, "started": run.started_at or "", "finished": run.finished_at or "",
           "duration_s": round(d, 3) if d is not None else None, "progress": round(run.progress, 4),
           "stage": run.stage, "error": run.error or ""}
    for key, value in flatten(run.summary).items():
        row[f"summary.{key}"] = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
    row["config_json"] = run.config_json
    return row


def write_exports(runs, folder: Path, keep_hours: float = 24.0) -> tuple[Path, Path]:
    """Write the runs to `runs.csv` and `runs.json` in a new folder under `folder`; returns both paths.

    Export folders older than `keep_hours` are removed first (they were made by this function; nothing else is)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - keep_hours * 3600
    for old in folder.glob("runs-*"):
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(tempfile.mkdtemp(prefix=f"runs-{stamp}-", dir=folder))
    rows = [export_row(r) for r in runs]
    summary_keys = sorted({k for row in rows for k in row if k.startswith("summary.")})
    columns = EXPORT_COLUMNS + summary_keys + ["config_json"]
    csv_path, json_path = out / "runs.csv", out / "runs.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    records = [{**{k: v for k, v in row.items() if k != "config_json"}, "config": json.loads(row["config_json"])}
               for row in rows]
    json_path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    return csv_path, json_path
