"""The one shared state: a SQLite file (WAL) over sqlite-utils, one connection per thread and process."""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .errors import InvalidInput, NotFound
from .records import (ACTIVE_STATUSES, ArtifactRecord, LogLine, MetricPoint, ModelFormat, ModelRecord, RunRecord,
                      RunStatus)

migrations = Migrations("slmops")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@migrations()
def m001_initial(db: Database) -> None:
    db["models"].create(
        {"id": str, "format": str, "path": str, "source": str, "source_ref": str, "status": str, "params": int,
         "size_bytes": int, "architecture": str, "parent_id": str, "run_id": int, "created_at": str, "owned": int,
         "error": str},
        pk="id",
    )
    db["runs"].create(
        {"id": int, "kind": str, "status": str, "model_id": str, "config_json": str, "target": str,
         "created_at": str, "started_at": str, "finished_at": str, "progress": float, "stage": str,
         "eta_s": float, "error": str, "pid": int, "pid_started": float, "cancel_requested": int,
         "summary_json": str},
        pk="id",
    )
    db["runs"].create_index(["status"])
    db["metrics"].create({"run_id": int, "step": int, "name": str, "value": float, "time": str})
    db["metrics"].create_index(["run_id", "name", "step"])
    db["logs"].create({"id": int, "run_id": int, "time": str, "level": str, "message": str}, pk="id")
    db["logs"].create_index(["run_id"])
    db["artifacts"].create(
        {"id": int, "run_id": int, "kind": str, "path": str, "size_bytes": int, "model_id": str, "created_at": str},
        pk="id",
    )
    db["artifacts"].create_index(["run_id"])


@migrations()
def m002_run_filter_indexes(db: Database) -> None:
    """Indexes for the run history's filters (kind, status, model, date); adds nothing else, drops nothing."""
    for column in ("kind", "status", "model_id", "created_at"):
        db["runs"].create_index([column], if_not_exists=True)  # idx_runs_status exists since m001


@migrations()
def m003_run_queue(db: Database) -> None:
    """`exclusive` runs (training, export, benchmark) share a bounded number of slots; the others start at once."""
    db["runs"].add_column("exclusive", int, not_null_default=0)


@migrations()
def m004_tasks(db: Database) -> None:
    """Named tasks (engine/tasks.py): an evaluation set, a scorer and generation settings, as the Task's JSON."""
    db["tasks"].create({"name": str, "config_json": str, "bundled": int, "created_at": str}, pk="name",
                       if_not_exists=True)  # two processes opening an older workspace at once may both run this


@migrations()
def m005_conversations(db: Database) -> None:
    """Saved chat conversations (engine/conversations.py): the messages as JSON, the model they were had with."""
    db["conversations"].create({"id": int, "title": str, "model_id": str, "messages_json": str, "created_at": str,
                                "updated_at": str}, pk="id", if_not_exists=True)


@migrations()
def m006_requests(db: Database) -> None:
    """Requests answered by `engine serve` (engine/serve_monitor.py): one row each, written at start, completed at
    the end."""
    db["requests"].create({"id": str, "server": str, "model": str, "adapter": str, "started_at": str,
                           "finished_at": str, "status": str, "prompt_tokens": int, "completion_tokens": int,
                           "ttft_s": float, "total_s": float, "decode_tok_s": float, "error": str,
                           "prompt_text": str}, pk="id", if_not_exists=True)
    db["requests"].create_index(["started_at"], if_not_exists=True)
    db["requests"].create_index(["server", "status"], if_not_exists=True)


@migrations()
def m007_run_parent(db: Database) -> None:
    """A study's trials are runs of their own, linked to the study's run."""
    if "parent_run_id" not in db["runs"].columns_dict:  # two processes opening an older workspace at once
        db["runs"].add_column("parent_run_id", int)
    db["runs"].create_index(["parent_run_id"], if_not_exists=True)


def _utc_bound(value: str, name: str, end_of_day: bool) -> str:
    """A `since`/`until` filter as the ISO UTC text stored in created_at (string order = time order).

    A bare date covers its whole UTC day: since 2025-03-01 starts at its midnight, until 2025-03-01 ends before the
    next midnight. A date-time without an offset is taken as UTC."""
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return (day + timedelta(days=1) if end_of_day else day).isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name} '{value}' is not a date: write YYYY-MM-DD (or an ISO date-time).") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def run_filter_sql(kind: str | None = None, status: str | None = None, model_id: str | None = None,
                   since: str | None = None, until: str | None = None) -> tuple[str, list]:
    """The WHERE clause ("1 = 1" when no filter) and its parameters for the run filters; each one is optional."""
    clauses, params = [], []
    for column, value in (("kind", kind), ("status", status), ("model_id", model_id)):
        if value is not None and value != "":
            clauses.append(f"{column} = ?")
            params.append(value.value if isinstance(value, RunStatus) else str(value))
    if since:
        clauses.append("created_at >= ?")
        params.append(_utc_bound(since, "since", end_of_day=False))
    if until:
        bare_date = len(str(until).strip()) == 10
        clauses.append("created_at < ?" if bare_date else "created_at <= ?")
        params.append(_utc_bound(until, "until", end_of_day=True))
    return " AND ".join(clauses) or "1 = 1", params


class _Database(Database):
    """sqlite-utils' Database whose transactions take the write lock when they begin (BEGIN IMMEDIATE).

    sqlite-utils opens them with a plain (deferred) BEGIN. In WAL mode a deferred transaction that reads before it
    writes (merge_summary, delete_where's table check) fails at once with "database is locked" when another
    process wrote in between, without waiting for busy_timeout; an immediate one waits for the lock instead."""

    @contextlib.contextmanager
    def atomic(self):
        if self.conn.in_transaction:
            with super().atomic():  # nested: a savepoint
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()  # a no-op when the error already ended the transaction
            raise


class Store:
    """Thread-safe access to the workspace database: each thread gets its own connection."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self.db
        db.execute("PRAGMA journal_mode=WAL")
        migrations.apply(db)

    @property
    def db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(str(self.path), timeout=30.0)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            db = _Database(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ---- models -------------------------------------------------------------------------------------------
    def add_model(self, **row) -> ModelRecord:
        row["format"] = ModelFormat(row["format"]).value  # an unknown format is refused; the column holds its text
        row.setdefault("created_at", utcnow())
        row["owned"] = int(bool(row.get("owned")))
        self.db["models"].insert(row, pk="id")
        return self.get_model(row["id"])

    def update_model(self, model_id: str, **values) -> None:
        self.db["models"].update(model_id, values)

    def get_model(self, model_id: str) -> ModelRecord:
        rows = list(self.db["models"].rows_where("id = ?", [model_id]))
        if not rows:
            raise NotFound(f"No model named '{model_id}'. `python -m engine models list` shows the registered ones.")
        return ModelRecord.from_row(rows[0])

    def has_model(self, model_id: str) -> bool:
        return bool(list(self.db["models"].rows_where("id = ?", [model_id], select="id")))

    def list_models(self) -> list[ModelRecord]:
        return [ModelRecord.from_row(r) for r in self.db["models"].rows_where(order_by="created_at")]

    def delete_model(self, model_id: str) -> None:
        """Delete the record; NotFound when it is already gone (two sessions deleting at once: the row count of the
        one DELETE tells which of them removed it)."""
        with self.db.atomic() as db:
            gone = db.execute("DELETE FROM models WHERE id = ?", [model_id]).rowcount
        if not gone:
            raise NotFound(f"No model named '{model_id}'. `python -m engine models list` shows the registered ones.")

    # ---- runs ---------------------------------------------------------------------------------------------
    def add_run(self, kind: str, config_json: str, target: str, model_id: str | None, exclusive: bool = False,
                parent_run_id: int | None = None) -> int:
        row = {"kind": kind, "status": RunStatus.QUEUED.value, "model_id": model_id, "config_json": config_json,
               "target": target, "created_at": utcnow(), "progress": 0.0, "stage": "queued",
               "cancel_requested": 0, "summary_json": "{}", "exclusive": int(exclusive),
               "parent_run_id": parent_run_id}
        return self.db["runs"].insert(row).last_pk

    def claim_queued(self, max_exclusive: int) -> list[int]:
        """Claim the queued runs that may start now (marked pid 0 until their worker is spawned), in one write
        transaction so two processes sharing the workspace never start the same run or overfill the slots:
        every non-exclusive run, and exclusive ones (oldest first) while fewer than `max_exclusive` hold a slot."""
        conn = self.db.conn
        if conn.execute("SELECT 1 FROM runs WHERE status = ? AND pid IS NULL LIMIT 1",
                        [RunStatus.QUEUED.value]).fetchone() is None:
            return []  # the usual case: a read, no write lock
        with self.db.atomic() as db:
            busy = db.execute("SELECT count(*) FROM runs WHERE exclusive = 1 AND pid IS NOT NULL AND status IN "
                              "(?, ?)", list(ACTIVE_STATUSES)).fetchone()[0]
            waiting = db.execute("SELECT id, exclusive FROM runs WHERE status = ? AND pid IS NULL ORDER BY id",
                                 [RunStatus.QUEUED.value]).fetchall()
            chosen = []
            for run_id, exclusive in waiting:
                if exclusive:
                    if busy >= max_exclusive:
                        continue
                    busy += 1
                chosen.append(run_id)
            db.conn.executemany("UPDATE runs SET pid = 0 WHERE id = ?", [(i,) for i in chosen])
        return chosen

    def queue_position(self, run_id: int) -> int | None:
        """1 for the next exclusive run to start, 2 for the one after…; None when the run is not waiting."""
        row = self.db.execute("SELECT status, pid, exclusive FROM runs WHERE id = ?", [run_id]).fetchone()
        if not row or row[0] != RunStatus.QUEUED.value or row[1] is not None or not row[2]:
            return None
        return self.db.execute("SELECT count(*) FROM runs WHERE status = ? AND pid IS NULL AND exclusive = 1 "
                               "AND id <= ?", [RunStatus.QUEUED.value, run_id]).fetchone()[0]

    def run_row(self, run_id: int) -> dict:
        rows = list(self.db["runs"].rows_where("id = ?", [run_id]))
        if not rows:
            raise NotFound(f"No run with id {run_id}. `python -m engine runs list` shows the runs.")
        return rows[0]

    def get_run(self, run_id: int) -> RunRecord:
        run = RunRecord.from_row(self.run_row(run_id))
        if run.status is RunStatus.QUEUED:
            run = replace(run, queue_position=self.queue_position(run_id))
        return run

    def list_runs(self, limit: int | None = 200, kind: str | None = None, status: str | None = None,
                  model_id: str | None = None, since: str | None = None, until: str | None = None) -> list[RunRecord]:
        """Newest first, at most `limit` (None: all). Filters are optional and combine with AND; `since`/`until`
        are ISO dates (UTC) compared with created_at, both inclusive (see `run_filter_sql`)."""
        where, params = run_filter_sql(kind, status, model_id, since, until)
        rows = self.db["runs"].rows_where(where, params, order_by="id desc", limit=limit)
        return [RunRecord.from_row(r) for r in rows]

    def count_runs(self, kind: str | None = None, status: str | None = None, model_id: str | None = None,
                   since: str | None = None, until: str | None = None) -> int:
        """How many runs match the same filters as `list_runs` (answered from the indexes)."""
        where, params = run_filter_sql(kind, status, model_id, since, until)
        return self.db.execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchone()[0]

    def run_facets(self) -> dict[str, list[str]]:
        """The distinct kinds, statuses and model ids of all runs (sorted), for filter choices."""
        return {column: [r[0] for r in self.db.execute(
                    f"SELECT DISTINCT {column} FROM runs WHERE {column} IS NOT NULL ORDER BY {column}").fetchall()]
                for column in ("kind", "status", "model_id")}

    def active_runs(self) -> list[RunRecord]:
        rows = self.db["runs"].rows_where(f"status in ({','.join('?' * len(ACTIVE_STATUSES))})",
                                          list(ACTIVE_STATUSES), order_by="id")
        return [RunRecord.from_row(r) for r in rows]

    def update_run(self, run_id: int, **values) -> None:
        self.db["runs"].update(run_id, values)

    def finish_run(self, run_id: int, status: RunStatus, error: str | None = None) -> bool:
        """Move a run into a final state exactly once; returns False when it was already final."""
        db = self.db
        with db.atomic():
            cur = db.execute(
                "UPDATE runs SET status = ?, error = coalesce(?, error), finished_at = ?, "
                "stage = CASE WHEN ? = 'succeeded' THEN 'done' ELSE ? END, "
                "progress = CASE WHEN ? = 'succeeded' THEN 1.0 ELSE progress END "
                f"WHERE id = ? AND status IN ({','.join('?' * len(ACTIVE_STATUSES))})",
                [status.value, error, utcnow(), status.value, status.value, status.value, run_id,
                 *ACTIVE_STATUSES],
            )
            changed = cur.rowcount == 1
            if changed and status is not RunStatus.SUCCEEDED:
                # A model this run was preparing can never become ready now: say why on the model too.
                db.execute("UPDATE models SET status = 'failed', error = ? WHERE run_id = ? AND status = 'preparing'",
                           [f"run {run_id} {status.value}: {error or ''}".strip(), run_id])
            return changed

    PRUNE = 2  # cancel_requested's value when a study's pruner stops the run

    def request_cancel(self, run_id: int, prune: bool = False) -> None:
        self.db["runs"].update(run_id, {"cancel_requested": self.PRUNE if prune else 1})

    def stopped_status(self, run_id: int) -> RunStatus:
        """How a run stopped on request ends: pruned (by its study) or cancelled."""
        row = self.db.execute("SELECT cancel_requested FROM runs WHERE id = ?", [run_id]).fetchone()
        return RunStatus.PRUNED if row and row[0] == self.PRUNE else RunStatus.CANCELLED

    def cancel_requested(self, run_id: int) -> bool:
        row = self.db.execute("SELECT cancel_requested FROM runs WHERE id = ?", [run_id]).fetchone()
        return bool(row and row[0])

    def merge_summary(self, run_id: int, values: dict) -> None:
        db = self.db
        with db.atomic():
            row = db.execute("SELECT summary_json FROM runs WHERE id = ?", [run_id]).fetchone()
            summary = json.loads(row[0] or "{}") if row else {}
            summary.update(values)
            db.execute("UPDATE runs SET summary_json = ? WHERE id = ?", [json.dumps(summary), run_id])

    def delete_run(self, run_id: int) -> None:
        db = self.db
        with db.atomic():
            for table in ("metrics", "logs", "artifacts"):
                db[table].delete_where("run_id = ?", [run_id])
            db["runs"].delete_where("id = ?", [run_id])

    # ---- metrics, logs, artifacts -------------------------------------------------------------------------
    def add_metric(self, run_id: int, name: str, value: float, step: int = 0) -> None:
        self.db["metrics"].insert({"run_id": run_id, "step": step, "name": name, "value": float(value),
                                   "time": utcnow()})

    def metrics(self, run_id: int) -> list[MetricPoint]:
        return [MetricPoint(**r) for r in self.db["metrics"].rows_where("run_id = ?", [run_id],
                                                                           order_by="name, step")]

    def add_log(self, run_id: int, message: str, level: str = "info") -> None:
        self.db["logs"].insert({"run_id": run_id, "time": utcnow(), "level": level, "message": message})

    def logs(self, run_id: int, tail: int = 200) -> list[LogLine]:
        rows = self.db.execute(
            "SELECT run_id, time, level, message FROM (SELECT * FROM logs WHERE run_id = ? ORDER BY id DESC LIMIT ?)"
            " ORDER BY id", [run_id, tail]).fetchall()
        return [LogLine(*r) for r in rows]

    def put_task(self, name: str, config_json: str, bundled: bool = False) -> None:
        self.db["tasks"].upsert({"name": name, "config_json": config_json, "bundled": int(bundled),
                                 "created_at": utcnow()}, pk="name")

    def task_rows(self) -> list[dict]:
        return list(self.db["tasks"].rows_where(order_by="name"))

    def task_json(self, name: str) -> str:
        rows = list(self.db["tasks"].rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"No task named '{name}'. `python -m engine tasks list` shows the stored ones.")
        return rows[0]["config_json"]

    def add_artifact(self, run_id: int, kind: str, path: str, size_bytes: int, model_id: str | None = None) -> None:
        self.db["artifacts"].insert({"run_id": run_id, "kind": kind, "path": path, "size_bytes": size_bytes,
                                     "model_id": model_id, "created_at": utcnow()})

    def artifacts_of_kind(self, kind: str) -> list[ArtifactRecord]:
        return [ArtifactRecord(**r) for r in self.db["artifacts"].rows_where("kind = ?", [kind], order_by="id desc")]

    def artifacts(self, run_id: int) -> list[ArtifactRecord]:
        return [ArtifactRecord(**r) for r in self.db["artifacts"].rows_where("run_id = ?", [run_id], order_by="id")]
