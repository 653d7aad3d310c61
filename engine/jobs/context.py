"""What a job sees of the world inside its worker process: progress, logs, metrics, artifacts and cancellation."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from .. import faults
from ..errors import Cancelled
from ..settings import Settings
from ..store import Store


_FAULTS = bool(os.environ.get("SLMOPS_FAULT"))


class JobContext:
    def __init__(self, run_id: int, store: Store, settings: Settings, poll_s: float = 0.25, engine_factory=None):
        self.run_id = run_id
        self._engine_factory, self._engine = engine_factory, None
        self.store = store
        self.settings = settings
        self.workdir = settings.runs_dir / str(run_id)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cancel = threading.Event()
        self._t0 = time.monotonic()
        self._recent: list[tuple[float, float]] = []  # (time, fraction) of the last RATE_WINDOW_S, for the ETA
        self._watch = threading.Thread(target=self._watch_cancel, args=(poll_s,), daemon=True)
        self._watch.start()

    # A background thread polls the store so that jobs can check a flag between steps without any I/O.
    def _watch_cancel(self, poll_s: float) -> None:
        store = Store(self.store.path)
        parent = store.run_row(self.run_id).get("parent_run_id")
        while not self._cancel.is_set():
            if store.cancel_requested(self.run_id):
                self._cancel.set()
                break
            if parent is not None and not _parent_alive(store, parent):
                # a study's trial whose study stopped (its process killed): nobody would read its result
                store.add_log(self.run_id, f"study run {parent} is gone: this trial stops", "warning")
                store.request_cancel(self.run_id)
                continue
            time.sleep(poll_s)
        store.close()

    def engine(self):
        """The workspace's Engine, for a job that starts runs of its own (a study's trials). The worker gives the
        factory (jobs do not import the Engine: it imports them)."""
        if self._engine is None:
            if self._engine_factory is None:
                raise RuntimeError("this job context has no engine")
            self._engine = self._engine_factory()
        return self._engine

    @property
    def cancel_event(self) -> threading.Event:
        return self._cancel

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by request")

    RATE_WINDOW_S = 180.0

    def progress(self, fraction: float, stage: str) -> None:
        """Report progress in [0, 1] with a stage text and an ETA: the rest of the bar at the pace of the last
        3 minutes (the whole run's pace before that). A job whose stages differ in pace (distill's layer
        importance, then training steps) would otherwise carry the first stage's pace into every later one."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if _FAULTS:
            faults.on_progress(fraction)
        now = time.monotonic()
        elapsed = now - self._t0
        self._recent = [(t, f) for t, f in self._recent if now - t <= self.RATE_WINDOW_S] + [(now, fraction)]
        t_first, f_first = self._recent[0]
        eta = None
        # no estimate from the first seconds: a job that sets 2 % as it starts loading would promise "0 s left"
        if fraction > 0.01 and elapsed >= 15:
            recent = (fraction - f_first) / (now - t_first) if now - t_first >= 30 and fraction > f_first else 0
            eta = (1 - fraction) / recent if recent > 0 and elapsed >= self.RATE_WINDOW_S else \
                elapsed * (1 - fraction) / fraction
        self.store.update_run(self.run_id, progress=fraction, stage=stage, eta_s=eta)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def report(self, fraction: float, stage: str, eta_s: float | None) -> None:
        """Progress with an ETA the job computed itself (see Plan); progress() keeps the pace history, not this."""
        if _FAULTS:
            faults.on_progress(fraction)
        self.store.update_run(self.run_id, progress=min(max(float(fraction), 0.0), 1.0), stage=stage, eta_s=eta_s)

    def stage(self, text: str) -> None:
        """Say what is happening without moving the progress bar."""
        self.store.update_run(self.run_id, stage=text)

    def log(self, message: str, level: str = "info") -> None:
        self.store.add_log(self.run_id, message, level)

    def metric(self, name: str, value: float, step: int = 0) -> None:
        self.store.add_metric(self.run_id, name, value, step)

    def summary(self, **values) -> None:
        """Key results shown in the run history table."""
        self.store.merge_summary(self.run_id, values)

    def artifact(self, kind: str, path: Path, model_id: str | None = None) -> None:
        path = Path(path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        self.store.add_artifact(self.run_id, kind, str(path), size, model_id)


def _parent_alive(store: Store, run_id: int) -> bool:
    from ..records import RunStatus
    from ..runner import process_alive

    row = store.run_row(run_id)
    if RunStatus(row["status"]).final:
        return False
    return row["status"] == RunStatus.QUEUED.value or process_alive(row.get("pid"), row.get("pid_started"))


class Span:
    """A job context whose progress bar runs over [lo, hi] of the run's: a stage that reports 0..1 of its own work
    (a Trainer's steps) leaves room for what comes after it. Everything else is the run's own."""

    def __init__(self, ctx, lo: float, hi: float):
        self._ctx, self.lo, self.hi = ctx, lo, hi

    def __getattr__(self, attr):
        return getattr(self._ctx, attr)

    def progress(self, fraction: float, stage: str) -> None:
        self._ctx.progress(self.lo + (self.hi - self.lo) * min(max(float(fraction), 0.0), 1.0), stage)

    def report(self, fraction: float, stage: str, eta_s: float | None) -> None:
        """A Plan inside the span (a part of a sweep or a set): its bar mapped into [lo, hi], and its ETA, which
        ends with the span, carried to the run's end at the pace the run has kept up to the span's end."""
        if eta_s is not None and self.hi < 1.0:
            elapsed = self._ctx.elapsed()
            eta_s = (elapsed + eta_s) / max(self.hi, 1e-9) - elapsed
        self._ctx.report(self.lo + (self.hi - self.lo) * min(max(float(fraction), 0.0), 1.0), stage, eta_s)


class Plan:
    """A run's bar and ETA from the paces of its phases, for a job whose phases differ in pace (a fine-tune scores a
    held-out example in a fraction of an optimizer step's time). Each phase has its work in units and a pace in
    seconds per unit: measured once the phase is under way, else that of the phase named in `same` (scoring after
    training does what scoring before it did), else `guess` (e.g. a timed step at the start), else the pace of the
    phase now running. The ETA is the sum of what is left of each phase at its pace; the bar is the elapsed share
    of elapsed + ETA, so it moves with time (and never backwards)."""

    MEASURE_AFTER_S = 10.0  # a phase's first seconds say little of its pace

    def __init__(self, ctx, units: dict[str, float], same: dict[str, str] | None = None):
        self.ctx, self.units, self.same = ctx, dict(units), dict(same or {})
        self.done = dict.fromkeys(units, 0.0)
        self.guess: dict[str, float] = {}
        self.measured: dict[str, float] = {}
        self._first: dict[str, tuple[float, float]] = {}
        self.shown = 0.0

    def span(self, name: str) -> "PlanSpan":
        return PlanSpan(self, name)

    def pace(self, name: str, running: str) -> float | None:
        for table in (self.measured, self.guess):
            for key in (name, self.same.get(name)):
                if key in table:
                    return table[key]
        return self.measured.get(running)

    def remaining_s(self, running: str) -> float | None:
        total = 0.0
        for name, units in self.units.items():
            left = units - self.done[name]
            if left > 0:
                pace = self.pace(name, running)
                if pace is None:
                    return None
                total += left * pace
        return total

    def advance(self, name: str, fraction: float, stage: str) -> None:
        now = time.monotonic()
        done = self.units[name] * min(max(float(fraction), 0.0), 1.0)
        self.done[name] = done
        t0, d0 = self._first.setdefault(name, (now, done))
        if done > d0 and now - t0 >= self.MEASURE_AFTER_S:
            self.measured[name] = (now - t0) / (done - d0)
        eta = self.remaining_s(name)
        elapsed = self.ctx.elapsed()
        if eta is None:  # no pace known yet: the share of the work done
            bar = sum(self.done.values()) / max(sum(self.units.values()), 1e-9)
        else:
            bar = elapsed / max(elapsed + eta, 1e-9)
        self.shown = max(self.shown, min(bar, 0.99))
        self.ctx.report(self.shown, stage, eta if eta is not None and elapsed >= 15 else None)


class PlanSpan(Span):
    """One phase of a Plan, with the interface of a job context (its progress is the phase's 0..1)."""

    def __init__(self, plan: Plan, name: str):
        super().__init__(plan.ctx, 0.0, 1.0)
        self.plan, self.name = plan, name

    def progress(self, fraction: float, stage: str) -> None:
        self.plan.advance(self.name, fraction, stage)


class PartContext(Span):
    """One part of a job that runs a recipe several times (a sweep): the part's own folder, its progress mapped into
    [lo, hi] of the run's bar, its stages and logs named after it, its metrics prefixed with its name, and its
    summary kept apart (`values`) for the job to gather. `shared` holds what the parts measure once between them."""

    def __init__(self, ctx, name: str, lo: float, hi: float, shared: dict):
        super().__init__(ctx, lo, hi)
        self.name, self.shared, self._t0 = name, shared, time.monotonic()
        self.workdir = ctx.workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.values: dict = {}

    def progress(self, fraction: float, stage: str) -> None:
        super().progress(fraction, f"{self.name}: {stage}")

    def report(self, fraction: float, stage: str, eta_s: float | None) -> None:
        super().report(fraction, f"{self.name}: {stage}", eta_s)

    def elapsed(self) -> float:  # the part's own time: a Plan inside it paces the part, not the run
        return time.monotonic() - self._t0

    def stage(self, text: str) -> None:
        self._ctx.stage(f"{self.name}: {text}")

    def log(self, message: str, level: str = "info") -> None:
        self._ctx.log(f"{self.name}: {message}", level)

    def metric(self, name: str, value: float, step: int = 0) -> None:
        self._ctx.metric(f"{self.name}/{name}", value, step)

    def summary(self, **values) -> None:
        self.values.update(values)
