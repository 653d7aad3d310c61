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


def fmt_duration(seconds: float | None) -> str:
    """12.3 s · 4 min 05 s · 3 h 20 min · 5.2 days"""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 86400:.1f} days"


def eta_text(run) -> str:
    """"about 4 min 05 s left" for an active run with an estimate, else empty."""
    if not run.eta_s or run.eta_s < 1 or run.status.final:
        return ""
    return f"about {fmt_duration(run.eta_s) if run.eta_s >= 60 else f'{run.eta_s:.0f} s'} left"


MODEL_HEADERS = ["name", "status", "format", "architecture", "parameters", "size on disk", "source", "parent",
                 "created", "path"]


def short_text(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def model_rows(models) -> list[list]:
    """One row per model; a failed model's error is cut to a few words (the whole of it shows under Manage when
    the model is picked), so one long message cannot push the other columns off screen."""
    return [[m.id, m.status + (f": {short_text(m.error)}" if m.error else ""), m.format, m.architecture or "",
             fmt_params(m.params), fmt_size(m.size_bytes), m.source, m.parent_id or "", fmt_time(m.created_at),
             m.path] for m in models]


RUN_HEADERS = ["id", "kind", "status", "model", "started", "duration", "progress", "key metrics"]


def short_summary(summary: dict, width: int = 160) -> str:
    """The scalar results of a run on one line (lists and nested tables belong to the run's details)."""
    parts = [f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in summary.items()
             if not isinstance(v, (list, dict))]
    return short_text(", ".join(parts), width)


def run_rows(runs) -> list[list]:
    """One row per run; a study's trial names its study's run beside its kind."""
    rows = []
    for r in runs:
        kind = f"{r.kind} · trial of {r.parent_run_id}" if r.parent_run_id else r.kind
        rows.append([r.id, kind, r.status.value, r.model_id or "", fmt_time(r.started_at or r.created_at),
                     fmt_duration(duration_s(r)), f"{r.progress:.0%} {r.stage}",
                     short_summary(r.summary) or short_text(r.error or "", 80)])
    return rows
