"""Spawns worker processes for runs, watches them, enforces cancellation, and settles runs whose worker is gone.

Workers are plain child processes (`python -m engine.worker RUN_ID`) in their own session, so a worker survives a
restart of the server and the next server adopts it. One supervisor thread per Runner watches every tracked run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .configs import JobConfig
from .records import RunRecord, RunStatus
from .settings import PROJECT_ROOT, Settings
from .store import Store

_KILL_AFTER_TERM_S = 2.0


@dataclass
class _Tracked:
    run_id: int
    pid: int
    popen: subprocess.Popen | None  # None for a worker adopted from an earlier server
    cancel_seen: float | None = None
    terminated: float | None = None
    log_path: Path | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _process_alive(pid: int, started: float | None) -> bool:
    """True when `pid` is running and is the same process we spawned (its start time matches)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Runner:
    def __init__(self, settings: Settings, store: Store, poll_s: float = 0.2):
        self.settings = settings
        self.store = store
        self.poll_s = poll_s
        self._tracked: dict[int, _Tracked] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- starting -----------------------------------------------------------------------------------------
    def start(self, config: JobConfig, target: str | None = None) -> int:
        """Record the run, spawn its worker, and return the run id at once."""
        run_id = self.store.add_run(config.kind, config.model_dump_json(), target or config.target, config.model_ref())
        workdir = self.settings.runs_dir / str(run_id)
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "worker.log"
        env = dict(os.environ)
        env.update(self.settings.cache_env())
        env["SLMOPS_HOME"] = str(self.settings.home)
        env["SLMOPS_OFFLINE"] = "1" if self.settings.offline else "0"
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "engine.worker", str(run_id)], cwd=str(PROJECT_ROOT), env=env,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            started = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            started = None
        self.store.update_run(run_id, pid=popen.pid, pid_started=started)
        self._track(_Tracked(run_id, popen.pid, popen, log_path=log_path))
        return run_id

    # ---- controlling --------------------------------------------------------------------------------------
    def cancel(self, run_id: int) -> RunRecord:
        """Ask a run to stop: the job sees the flag between steps; after a grace period the worker is killed."""
        run = self.store.get_run(run_id)
        if run.status.final:
            return run
        self.store.request_cancel(run_id)
        if run.pid is None or not _process_alive(run.pid, None):
            self.store.finish_run(run_id, RunStatus.CANCELLED, "cancelled before its worker started")
        return self.store.get_run(run_id)

    def wait(self, run_id: int, timeout: float | None = None) -> RunRecord:
        """Block until the run is final (or the timeout passes) and return its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.store.get_run(run_id)
            if run.status.final:
                tracked = self._tracked.get(run_id)
                if tracked is None or tracked.done.wait(timeout=5):
                    return self.store.get_run(run_id)
            if deadline is not None and time.monotonic() > deadline:
                return run
            time.sleep(0.1)

    def recover(self) -> list[int]:
        """At start-up: adopt runs whose worker still lives, mark the others interrupted. Returns those marked."""
        interrupted = []
        for run in self.store.active_runs():
            row = self.store.run_row(run.id)
            if run.pid is not None and _process_alive(run.pid, row.get("pid_started")):
                log = self.settings.runs_dir / str(run.id) / "worker.log"
                self._track(_Tracked(run.id, run.pid, None, log_path=log))
            elif self.store.finish_run(run.id, RunStatus.INTERRUPTED,
                                       "interrupted: the server stopped and the worker process is gone"):
                interrupted.append(run.id)
        return interrupted

    def shutdown(self) -> None:
        self._stop.set()

    # ---- supervision --------------------------------------------------------------------------------------
    def _track(self, tracked: _Tracked) -> None:
        with self._lock:
            self._tracked[tracked.run_id] = tracked
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._supervise, name="slmops-runner", daemon=True)
                self._thread.start()

    def _supervise(self) -> None:
        store = Store(self.store.path)  # this thread's own connection
        try:
            while not self._stop.is_set():
                with self._lock:
                    tracked = list(self._tracked.values())
                for t in tracked:
                    if self._check(store, t):
                        t.done.set()
                        with self._lock:
                            self._tracked.pop(t.run_id, None)
                time.sleep(self.poll_s)
        finally:
            store.close()

    def _check(self, store: Store, t: _Tracked) -> bool:
        """One look at one worker; returns True once the run is settled and no longer needs watching."""
        if t.popen is not None:
            exit_code = t.popen.poll()
            alive = exit_code is None
        else:
            exit_code = None
            alive = _process_alive(t.pid, None)
        if not alive:
            self._settle(store, t, exit_code)
            return True
        if store.cancel_requested(t.run_id):
            now = time.monotonic()
            if t.cancel_seen is None:
                t.cancel_seen = now
            elif t.terminated is None and now - t.cancel_seen > self.settings.cancel_grace_s:
                self._signal(t, signal.SIGTERM)
                t.terminated = now
            elif t.terminated is not None and now - t.terminated > _KILL_AFTER_TERM_S:
                self._signal(t, signal.SIGKILL)
        return False

    def _signal(self, t: _Tracked, sig: int) -> None:
        try:
            os.kill(t.pid, sig)
        except ProcessLookupError:
            pass

    def _settle(self, store: Store, t: _Tracked, exit_code: int | None) -> None:
        """The worker is gone: if it did not record a final state itself, record what happened."""
        run = store.get_run(t.run_id)
        if run.status.final:
            return
        if run.cancel_requested:
            store.finish_run(t.run_id, RunStatus.CANCELLED, "cancelled by request (worker stopped)")
            return
        if exit_code is None:
            how = "the worker process disappeared"
        elif exit_code < 0:
            how = f"the worker process was killed by signal {signal.Signals(-exit_code).name}"
        else:
            how = f"the worker process exited with code {exit_code} before finishing"
        tail = _tail(t.log_path)
        if tail:
            store.add_log(t.run_id, f"last output of the worker:\n{tail}", "error")
        store.finish_run(t.run_id, RunStatus.FAILED, how)
