"""Served-model monitoring: every request to `engine serve` is a row of the workspace database (written when it
starts, completed when it ends) and counts in Prometheus metrics (prometheus_client) served at /metrics.

A request pays only a queue put for its row: a writer thread stores at once whatever queued up, in one transaction
(while one commits the next ones gather, so a burst costs a few transactions, not one per record). A committed row
survives the server being killed (SQLite's WAL is in the OS's hands once committed); a server that dies leaves its
open rows "running", and the next server at the same address marks them "interrupted" when it starts. A reply
starts only once its request's row is committed (`RequestLog.stored`, awaited just before the first byte, by which
time the writer has almost always stored it), so a server killed at any moment has a row for every request it
acknowledged."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from dataclasses import dataclass

from .store import utcnow

MAX_CONCURRENCY, MAX_QUEUE = 4, 64  # serve's defaults: 4 generations at once (on 2 cores more only share them)
# latency buckets (seconds) for a small model on a CPU: a short reply in well under a second, a long one in a minute
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServeMetrics:
    """The Prometheus metrics of one server (its own registry, so two servers in one process do not mix)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("slmops_requests", "Chat completion requests by model and final status",
                                ["model", "status"], registry=self.registry)
        self.latency = Histogram("slmops_request_seconds", "Time from request to its last token", ["model"],
                                 buckets=BUCKETS, registry=self.registry)
        self.ttft = Histogram("slmops_time_to_first_token_seconds", "Time from request to its first token",
                              ["model"], buckets=BUCKETS, registry=self.registry)
        self.tokens = Counter("slmops_tokens", "Tokens read (prompt) and written (completion)", ["model", "kind"],
                              registry=self.registry)
        self.in_flight = Gauge("slmops_requests_in_flight", "Requests being answered now", ["model"],
                               registry=self.registry)
        self.queued = Gauge("slmops_requests_queued", "Requests waiting for a generation slot",
                            registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestLog:
    """Request rows of one server (`server` = its host:port), written by a background thread in batches."""

    def __init__(self, store, server: str, flush_s: float = 0.0):
        self.store, self.server, self.flush_s = store, server, flush_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0  # queued and not yet stored
        self._inserted: dict[str, threading.Event] = {}  # rows queued for insert, set once committed
        self._cond = threading.Condition()
        with store.db.atomic():
            store.db.execute("UPDATE requests SET status = 'interrupted', error = 'the server stopped before the "
                             "reply ended' WHERE server = ? AND status = 'running'", [server])
        self._thread = threading.Thread(target=self._write, name=f"slmops-requests-{server}", daemon=True)
        self._thread.start()

    def begin(self, model: str, adapter: str = "", prompt_text: str | None = None) -> str:
        rid = uuid.uuid4().hex
        self._inserted[rid] = threading.Event()
        self._put(("insert", {"id": rid, "server": self.server, "model": model, "adapter": adapter,
                              "started_at": utcnow(), "status": "running", "prompt_text": prompt_text}))
        return rid

    def end(self, rid: str, **fields) -> None:
        self._put(("update", rid, {"finished_at": utcnow(), **fields}))

    def _put(self, item) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put(item)

    async def stored(self, rid: str, timeout_s: float = 5.0) -> None:
        """Return once `rid`'s row is committed (at once when it already is), without blocking the event loop."""
        event = self._inserted.get(rid)
        if event is not None and not event.is_set():
            await asyncio.to_thread(event.wait, timeout_s)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued record is stored."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if self.flush_s:
                time.sleep(self.flush_s)  # optionally let a burst gather into one transaction
            batch = [first]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            batch = [b for b in batch if b is not None]
            try:
                with self.store.db.atomic():
                    rows = [b[1] for b in batch if b[0] == "insert"]
                    if rows:
                        self.store.db["requests"].insert_all(rows)
                    for b in batch:
                        if b[0] == "update":
                            self.store.db["requests"].update(b[1], b[2])
            except Exception as exc:  # noqa: BLE001 - monitoring must never take the server down
                print(f"request log: {len(batch)} records not stored: {exc}", flush=True)
            for b in batch:  # stored (or given up on): the replies waiting for these rows may start
                if b[0] == "insert" and (event := self._inserted.pop(b[1]["id"], None)) is not None:
                    event.set()
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()
            if stop:
                return


@dataclass
class Tracked:
    """One request from start to end: its row and its metrics, completed once (`ok`, `fail`)."""
    log: RequestLog
    metrics: ServeMetrics
    model: str
    rid: str
    t0: float
    open: bool = True
    queued_s: float = 0.0  # time waiting for a generation slot (part of its time to first token)

    @classmethod
    def start(cls, log: RequestLog, metrics: ServeMetrics, model: str, prompt_text: str | None = None) -> "Tracked":
        metrics.in_flight.labels(model).inc()
        return cls(log, metrics, model, log.begin(model, prompt_text=prompt_text), time.perf_counter())

    def _close(self, status: str, **fields) -> None:
        if not self.open:
            return
        self.open = False
        total = time.perf_counter() - self.t0
        self.metrics.in_flight.labels(self.model).dec()
        self.metrics.requests.labels(self.model, status).inc()
        self.metrics.latency.labels(self.model).observe(total)
        self.log.end(self.rid, status=status, total_s=round(total, 4), **fields)

    def ok(self, last, status: str = "ok") -> None:
        """Completed: tokens, time to first token and decode speed from the last chunk the model streamed."""
        prompt = (getattr(last, "prompt_tokens", 0) or 0) if last is not None else 0
        completion = (getattr(last, "new_tokens", 0) or 0) if last is not None else 0
        ttft = getattr(last, "seconds_to_first_token", None) if last is not None else None
        ttft = ttft + self.queued_s if ttft is not None else None
        if ttft is not None:
            self.metrics.ttft.labels(self.model).observe(ttft)
        self.metrics.tokens.labels(self.model, "prompt").inc(prompt)
        self.metrics.tokens.labels(self.model, "completion").inc(completion)
        self._close(status, prompt_tokens=prompt, completion_tokens=completion,
                    ttft_s=round(ttft, 4) if ttft is not None else None,
                    decode_tok_s=round(last.tokens_per_s, 2) if last is not None and last.tokens_per_s else None)

    def fail(self, status: str, error: str) -> None:
        self._close(status, error=error[:500])


def request_rows(store, model: str | None = None, since: str | None = None, limit: int = 10_000) -> list[dict]:
    """Stored requests, newest first (all servers), optionally of one model and since an ISO time."""
    clauses, params = [], []
    if model:
        clauses.append("model = ?")
        params.append(model)
    if since:
        clauses.append("started_at >= ?")
        params.append(since)
    where = " AND ".join(clauses) or "1 = 1"
    return list(store.db.query(f"SELECT * FROM requests WHERE {where} ORDER BY started_at DESC LIMIT ?",
                               [*params, int(limit)]))
