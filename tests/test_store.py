import threading

import pytest

from engine.errors import NotFound
from engine.records import RunStatus
from engine.store import Store, migrations


def test_migrations_are_idempotent_and_wal_is_on(tmp_path):
    db_path = tmp_path / "s.db"
    Store(db_path)
    store = Store(db_path)  # a second open applies nothing again
    applied = [m.name for m in migrations.applied(store.db)]
    assert applied == ["m001_initial", "m002_run_filter_indexes", "m003_run_queue", "m004_tasks", "m005_conversations",
                       "m006_requests", "m007_run_parent"]
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"models", "runs", "metrics", "logs", "artifacts"} <= set(store.db.table_names())


def test_run_lifecycle_rows_and_single_final_state(tmp_path):
    store = Store(tmp_path / "s.db")
    rid = store.add_run("selftest", '{"model_id": "m"}', "engine.jobs.selftest:run", "m")
    assert store.get_run(rid).status is RunStatus.QUEUED
    store.add_metric(rid, "loss", 1.5, step=3)
    store.add_log(rid, "hello")
    store.merge_summary(rid, {"a": 1})
    store.merge_summary(rid, {"b": 2})
    assert store.finish_run(rid, RunStatus.SUCCEEDED) is True
    assert store.finish_run(rid, RunStatus.FAILED, "late") is False  # a final state is never overwritten
    run = store.get_run(rid)
    assert run.status is RunStatus.SUCCEEDED and run.error is None and run.progress == 1.0
    assert run.summary == {"a": 1, "b": 2}
    assert [(m.name, m.step, m.value) for m in store.metrics(rid)] == [("loss", 3, 1.5)]
    assert [line.message for line in store.logs(rid)] == ["hello"]
    store.delete_run(rid)
    assert store.list_runs() == [] and store.metrics(rid) == []


def test_failed_run_marks_the_model_it_was_preparing(tmp_path):
    store = Store(tmp_path / "s.db")
    rid = store.add_run("prepare_model", "{}", "x:y", "m1")
    store.add_model(id="m1", format="hf", path="/nowhere", source="gguf", source_ref="x", status="preparing",
                    run_id=rid, owned=True)
    store.finish_run(rid, RunStatus.INTERRUPTED, "server stopped")
    model = store.get_model("m1")
    assert model.status == "failed" and "interrupted" in model.error


def test_deleting_a_model_twice_says_it_is_gone_the_second_time(tmp_path):
    store = Store(tmp_path / "s.db")
    store.add_model(id="m1", format="hf", path="/nowhere", source="local", source_ref="x", status="ready", owned=False)
    store.delete_model("m1")  # the first delete removes the row ...
    with pytest.raises(NotFound, match="No model named 'm1'"):
        store.delete_model("m1")  # ... and the second one (another session racing it) learns that it lost


def test_concurrent_writers_from_threads(tmp_path):
    store = Store(tmp_path / "s.db")
    rid = store.add_run("selftest", "{}", "x:y", None)

    def write(k):
        for i in range(50):
            store.add_metric(rid, f"m{k}", i, step=i)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.metrics(rid)) == 200


def _busy_writer(path, run_id, rounds, errors):
    store = Store(path)
    for i in range(rounds):
        try:  # what a worker writes while it runs, plus the queue claim every server does
            store.add_metric(run_id, "loss", 1.0, step=i)
            store.update_run(run_id, progress=i / rounds)
            store.merge_summary(run_id, {"step": i})  # reads, then writes, in one transaction
            store.add_log(run_id, "step")
            store.claim_queued(1)
        except Exception as exc:  # noqa: BLE001 - counted and shown below
            errors.put(repr(exc))


def test_processes_writing_at_once_never_see_database_is_locked(tmp_path):
    """Three processes write the same store at full speed. Transactions that read before they write used to fail
    at once with "database is locked" (WAL, deferred BEGIN) when another process wrote in between."""
    import multiprocessing

    path = tmp_path / "s.db"
    store = Store(path)
    runs = [store.add_run("k", "{}", "t", None) for _ in range(3)]
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_busy_writer, args=(path, r, 300, errors)) for r in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    seen = []
    while not errors.empty():
        seen.append(errors.get())
    assert seen == [] and all(p.exitcode == 0 for p in procs)
    assert all(store.get_run(r).summary == {"step": 299} for r in runs)
