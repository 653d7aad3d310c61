"""Records -> table rows for gr.Dataframe (pure functions, no engine calls)."""
from __future__ import annotations

from datetime import datetime


def fmt_size(n: int | None) -> str:
    if not n:
        return ""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def fmt_params(n: int | None) -> str:
    if not n:
        return ""
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def fmt_time(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else ""


def duration_s(run) -> float | None:
    if not run.started_at:
        return None
    end = datetime.fromisoformat(run.finished_at) if run.finished_at else datetime.now(
        datetime.fromisoformat(run.started_at).tzinfo)
    return (end - datetime.fromisoformat(run.started_at)).total_seconds()


MODEL_HEADERS = ["name", "status", "format", "architecture", "parameters", "size on disk", "source", "parent",
                 "created", "path"]


def model_rows(models) -> list[list]:
    return [[m.id, m.status + (f": {m.error}" if m.error else ""), m.format, m.architecture or "",
             fmt_params(m.params), fmt_size(m.size_bytes), m.source, m.parent_id or "", fmt_time(m.created_at),
             m.path] for m in models]


RUN_HEADERS = ["id", "kind", "status", "model", "started", "duration", "progress", "key metrics"]


def run_rows(runs) -> list[list]:
    rows = []
    for r in runs:
        d = duration_s(r)
        metrics = ", ".join(f"{k}={v}" for k, v in r.summary.items())
        rows.append([r.id, r.kind, r.status.value, r.model_id or "", fmt_time(r.started_at or r.created_at),
                     f"{d:.1f} s" if d is not None else "", f"{r.progress:.0%} {r.stage}", metrics or r.error or ""])
    return rows
