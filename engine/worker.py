"""Entry point of a worker process: `python -m engine.worker RUN_ID` runs one job and records how it ended.

The parent (runner.py) only spawns and watches; everything the job reports goes through the store.
"""
from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import traceback

from . import faults
from .records import RunStatus
from .runner import remove_partials
from .settings import Settings
from .store import Store, utcnow


def _on_sigterm(signum, frame):  # turn a polite kill into an exception so `finally` blocks run
    from .errors import Cancelled

    raise Cancelled("stopped by SIGTERM")


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
_DISK_WORDS = ("No space left", "File too large", "FileTooLarge", "StorageFull", "Disk quota", "Permission denied",
               "Read-only file system")


def _disk_trouble(exc: BaseException | None) -> bool:
    """A full disk or an unwritable workspace, seen directly or through libraries that wrap the OSError."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS or any(w in str(exc) for w in _DISK_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def main(run_id: int) -> int:
    settings = Settings.from_env()
    settings.prepare()
    store = Store(settings.db_path)
    row = store.run_row(run_id)
    if row["status"] != RunStatus.QUEUED.value:
        print(f"run {run_id} is {row['status']}, not queued; nothing to do", file=sys.stderr)
        return 1
    store.update_run(run_id, status=RunStatus.RUNNING.value, started_at=utcnow(), stage="starting")
    signal.signal(signal.SIGTERM, _on_sigterm)
    faults.install()

    from .errors import Cancelled
    from .jobs.context import JobContext

    def engine():
        from .api import Engine

        return Engine(settings, recover=False)

    ctx = JobContext(run_id, store, settings, engine_factory=engine)
    ctx.log(f"worker pid {os.getpid()} started {row['kind']} run")
    try:
        from .jobs.registry import JOB_KINDS

        if row["kind"] not in JOB_KINDS:  # a kind registered outside the engine registers itself on import
            importlib.import_module(row["target"].split(":")[0])
        kind = JOB_KINDS[row["kind"]]
        try:
            kind.run(ctx, kind.config.model_validate_json(row["config_json"]))
        except BaseException:
            # a study's trial whose study died has nobody watching it: the worker cleans up after itself
            remove_partials(settings, store, run_id)
            raise
    except Cancelled as exc:
        ctx.log(f"cancelled: {exc}", "warning")
        status = store.stopped_status(run_id)
        store.finish_run(run_id, status, f"pruned by its study: {exc}" if status is RunStatus.PRUNED else str(exc))
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must end the run, then propagate as exit code
        ctx.log(traceback.format_exc(), "error")
        message = f"{type(exc).__name__}: {exc}"
        if _disk_trouble(exc):
            message = (f"the workspace could not be written ({message}). Free disk space under {settings.home} or "
                       "make it writable, then start the run again (or resume it: checkpoints written before "
                       "are kept).")
        store.finish_run(run_id, RunStatus.FAILED, message)
        return 1
    store.finish_run(run_id, RunStatus.SUCCEEDED)
    ctx.log("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
