"""The run-history half of `Engine` (engine/api.py): follow, list, read, export and delete runs. A mixin over the
engine's store, settings and runner."""
from __future__ import annotations

import shutil
from pathlib import Path

from .errors import Busy
from .olive import olive_config
from .records import ArtifactRecord, LogLine, MetricPoint, RunRecord


class RunHistory:
    store: object  # engine.store.Store
    settings: object  # engine.settings.Settings
    runner: object  # engine.runner.Runner

    def cancel_run(self, run_id: int) -> RunRecord:
        return self.runner.cancel(run_id)

    def wait_run(self, run_id: int, timeout: float | None = None) -> RunRecord:
        return self.runner.wait(run_id, timeout)

    def get_run(self, run_id: int) -> RunRecord:
        return self.store.get_run(run_id)

    def list_runs(self, limit: int | None = 200, kind: str | None = None, status: str | None = None,
                  model_id: str | None = None, since: str | None = None, until: str | None = None) -> list[RunRecord]:
        """The newest `limit` runs (None: all) matching every filter given: job kind, status, model id, and
        created between `since` and `until` (ISO dates, UTC, both inclusive). A bad date raises InvalidInput."""
        return self.store.list_runs(limit, kind=kind, status=status, model_id=model_id, since=since, until=until)

    def export_files(self, run_id: int, paths: list[str]) -> list[str]:
        """Copies of a run's result files in the workspace's exports folder (the one folder the UI serves)."""
        folder = self.settings.home / "exports" / f"run{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for path in map(Path, paths):
            target = folder / path.name
            if path.is_file() and (not target.exists() or target.stat().st_mtime != path.stat().st_mtime):
                shutil.copy2(path, target)  # again when the run's file was written anew (an Olive config re-made)
            out += [str(target)] if target.exists() else []
        return out

    def count_runs(self, **filters) -> int:
        """How many runs match the filters of list_runs (kind, status, model_id, since, until)."""
        return self.store.count_runs(**filters)

    def run_facets(self) -> dict:
        """The distinct kinds, statuses and models in the run history (for filter choices)."""
        return self.store.run_facets()

    def active_runs(self) -> list[RunRecord]:
        return self.store.active_runs()

    def run_metrics(self, run_id: int) -> list[MetricPoint]:
        return self.store.metrics(run_id)

    def run_logs(self, run_id: int, tail: int = 200) -> list[LogLine]:
        return self.store.logs(run_id, tail)

    def run_artifacts(self, run_id: int) -> list[ArtifactRecord]:
        return self.store.artifacts(run_id)

    def olive_config(self, run_id: int) -> Path:
        """Olive's config that repeats a fine-tune or quantize run with `olive run` (engine.olive.olive_config)."""
        return olive_config(self.store, self.store.get_run(run_id), self.settings.runs_dir / str(run_id) / "olive")

    def delete_run(self, run_id: int) -> None:
        run = self.store.get_run(run_id)
        if not run.status.final:
            raise Busy(f"Run {run_id} is {run.status.value}: cancel it before deleting it.")
        self.store.delete_run(run_id)  # a model the run produced stays registered; only the history goes
        shutil.rmtree(self.settings.runs_dir / str(run_id), ignore_errors=True)
