"""Fault injection for the crash suite (tests/test_crash.py), off unless SLMOPS_FAULT is set in a worker's env.

SLMOPS_FAULT is a comma-separated list of:
  raise@F      the job raises RuntimeError the first time it reports progress >= F (0..1)
  pause=S      the job sleeps S seconds at every progress report: a slow machine, as a poller sees the job (a
               study's pruner reads a trial's evaluations every 2 s; on a fast machine a tiny trial ends first)
  fsize=N      no file written by the worker may grow past N bytes (RLIMIT_FSIZE): a full disk, as the job sees it
"""
from __future__ import annotations

import os
import resource
import signal
import time


def _spec() -> dict[str, str]:
    items = [i.strip() for i in os.environ.get("SLMOPS_FAULT", "").split(",") if i.strip()]
    return dict(i.replace("@", "=", 1).split("=", 1) for i in items)


def install() -> None:
    """Called once by the worker before the job runs."""
    limit = _spec().get("fsize")
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))


def on_progress(fraction: float) -> None:
    spec = _spec()
    if "pause" in spec:
        time.sleep(float(spec["pause"]))
    at = spec.get("raise")
    if at is not None and fraction >= float(at):
        raise RuntimeError(f"injected fault at progress {fraction:.2f}")
