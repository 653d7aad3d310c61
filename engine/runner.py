"""Spawns worker processes for runs, watches them, enforces cancellation, and settles runs whose worker is gone.

Workers are plain child processes (`python -m engine.worker RUN_ID`) in their own session, so a worker survives a
restart of the server and the next server adopts it. One supervisor thread per Runner watches every tracked run.
"""
from __future__ import annotations

import os
import shutil
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


def die_with_parent() -> None:
    """For Popen(preexec_fn=…), in the child: SIGTERM when the process that started it dies, even by SIGKILL
    (Linux), so a job's helpers (Olive's run, the benchmark's model processes) never outlive its worker."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class _Tracked:
    run_id: int
    pid: int
    popen: subprocess.Popen | None  # None for a worker adopted from an earlier server
    cancel_seen: float | None = None
    terminated: float | None = None
    log_path: Path | None = None
    done: threading.Event = field(default_factory=threading.Event)


def process_alive(pid: int, started: float | None) -> bool:
    """True when `pid` is running and is the same process we spawned (its start time matches)."""
    if not pid or pid <= 0:  # None: never spawned; 0: claimed from the queue, being spawned
        return False
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


def remove_partials(settings: Settings, store: Store, run_id: int) -> None:
    """Outputs are written as `*.partial` (in the run folder, or beside a model being prepared) and renamed when
    complete; what a run that did not finish left half-written is removed. Checkpoints stay (resume needs them).
    Called by the worker when its job fails or stops, and by whoever watched a worker that died."""
    leftovers = list((settings.runs_dir / str(run_id)).glob("*.partial"))
    leftovers += [settings.models_dir / f"{m.id}.partial" for m in store.list_models() if m.run_id == run_id]
    removed = [p.name for p in leftovers if p.exists()]
    for p in leftovers:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if removed:
        store.add_log(run_id, f"removed half-written output the run left: {', '.join(removed)}", "warning")


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
    def start(self, config: JobConfig, target: str, exclusive: bool = False, parent_run_id: int | None = None) -> int:
        """Record the run (its recipe's `module:function` as target) and return its id at once. It starts now when
        a slot is free (exclusive jobs: at most `settings.max_parallel_jobs` at a time), otherwise it waits in the
        queue, oldest first."""
        run_id = self.store.add_run(config.kind, config.model_dump_json(), target, config.model_ref(),
                                    exclusive=exclusive, parent_run_id=parent_run_id)
        (self.settings.runs_dir / str(run_id)).mkdir(parents=True, exist_ok=True)
        self.dispatch()
        self._ensure_supervisor()
        return run_id

    def dispatch(self, store: Store | None = None) -> list[int]:
        """Spawn a worker for every queued run that may start now; returns their ids."""
        store = store or self.store
        started = []
        for run_id in store.claim_queued(self.settings.max_parallel_jobs):
            try:
                self._spawn(store, run_id)
                started.append(run_id)
            except OSError as exc:
                store.finish_run(run_id, RunStatus.FAILED, f"could not start the worker process: {exc}")
        return started

    def _spawn(self, store: Store, run_id: int) -> None:
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
        store.update_run(run_id, pid=popen.pid, pid_started=started)
        self._track(_Tracked(run_id, popen.pid, popen, log_path=log_path))

    # ---- controlling --------------------------------------------------------------------------------------
    def cancel(self, run_id: int) -> RunRecord:
        """Ask a run to stop: the job sees the flag between steps; after a grace period the worker is killed."""
        run = self.store.get_run(run_id)
        if run.status.final:
            return run
        self.store.request_cancel(run_id)
        if run.pid is None or not process_alive(run.pid, None):
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
        """At start-up: adopt runs whose worker still lives, mark the others interrupted, start what the queue
        allows. Returns the runs marked interrupted."""
        interrupted = []
        for run in self.store.active_runs():
            row = self.store.run_row(run.id)
            if run.status is RunStatus.QUEUED and not run.pid:
                if run.pid == 0:  # claimed by a server that stopped before spawning it: back in the queue
                    self.store.update_run(run.id, pid=None)
                continue
            if run.pid and process_alive(run.pid, row.get("pid_started")):
                log = self.settings.runs_dir / str(run.id) / "worker.log"
                self._track(_Tracked(run.id, run.pid, None, log_path=log))
            elif self.store.finish_run(run.id, RunStatus.INTERRUPTED,
                                       "interrupted: the server stopped and the worker process is gone"):
                remove_partials(self.settings, self.store, run.id)
                interrupted.append(run.id)
        self.dispatch()
        self._ensure_supervisor()
        return interrupted

    def shutdown(self) -> None:
        self._stop.set()

    # ---- supervision --------------------------------------------------------------------------------------
    def _track(self, tracked: _Tracked) -> None:
        with self._lock:
            self._tracked[tracked.run_id] = tracked
        self._ensure_supervisor()

    def _ensure_supervisor(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._supervise, name="slmops-runner", daemon=True)
                self._thread.start()

    def _supervise(self) -> None:
        store = Store(self.store.path)  # this thread's own connection
        last_dispatch = 0.0
        try:
            while not self._stop.is_set():
                with self._lock:
                    tracked = list(self._tracked.values())
                settled = False
                for t in tracked:
                    if self._check(store, t):
                        t.done.set()
                        settled = True
                        with self._lock:
                            self._tracked.pop(t.run_id, None)
                # a finished run frees a slot; another process sharing the workspace may have queued runs too
                if settled or time.monotonic() - last_dispatch > 1.0:
                    self.dispatch(store)
                    last_dispatch = time.monotonic()
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
            alive = process_alive(t.pid, None)
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
        remove_partials(self.settings, store, t.run_id)
        if run.status.final:
            return
        if run.cancel_requested:
            status = store.stopped_status(t.run_id)
            store.finish_run(t.run_id, status, f"{status.value} by request (worker stopped)")
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
