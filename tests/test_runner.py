import os
import signal
import subprocess
import time

import pytest

from engine import JOB_KINDS, Engine, RunStatus, Settings
from engine.store import Store
from tests.jobs_for_tests import ProbeJob


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_success_reports_progress_metrics_and_summary(engine):
    rid = engine.start_run(ProbeJob(steps=4))
    run = engine.wait_run(rid, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.progress == 1.0 and run.started_at and run.finished_at
    assert [(m.step, m.value) for m in engine.run_metrics(rid)] == [(0, 0.0), (1, 2.0), (2, 4.0), (3, 6.0)]
    assert run.summary == {"last_value": 6.0}
    assert ProbeJob.model_validate_json(run.config_json) == ProbeJob(steps=4)  # the stored config clones the run


def test_progress_is_visible_while_running(engine):
    rid = engine.start_run(ProbeJob(steps=40, step_s=0.1))
    assert wait_for(lambda: 0 < engine.get_run(rid).progress < 1)
    run = engine.get_run(rid)
    assert run.status is RunStatus.RUNNING and run.stage.startswith("step ")
    engine.cancel_run(rid)
    engine.wait_run(rid, timeout=10)


def test_cancel_ends_within_five_seconds(engine):
    rid = engine.start_run(ProbeJob(steps=1000, step_s=0.1))
    assert wait_for(lambda: engine.get_run(rid).status is RunStatus.RUNNING)
    t0 = time.monotonic()
    engine.cancel_run(rid)
    run = engine.wait_run(rid, timeout=10)
    assert run.status is RunStatus.CANCELLED
    assert time.monotonic() - t0 <= 5.0


def test_cancel_stops_a_job_that_never_checks_the_flag(engine):
    rid = engine.start_run(ProbeJob(behaviour="stubborn"))
    assert wait_for(lambda: engine.get_run(rid).status is RunStatus.RUNNING)
    t0 = time.monotonic()
    engine.cancel_run(rid)
    run = engine.wait_run(rid, timeout=10)
    assert run.status is RunStatus.CANCELLED
    assert time.monotonic() - t0 <= 5.0


def test_exception_fails_with_message_and_traceback(engine):
    rid = engine.start_run(ProbeJob(behaviour="raise"))
    run = engine.wait_run(rid, timeout=60)
    assert run.status is RunStatus.FAILED
    assert run.error == "ValueError: boom on purpose at step 1"
    log = "\n".join(line.message for line in engine.run_logs(rid))
    assert "Traceback" in log and "jobs_for_tests.py" in log


def test_hard_exit_of_the_worker_fails_the_run(engine):
    rid = engine.start_run(ProbeJob(behaviour="exit"))
    run = engine.wait_run(rid, timeout=60)
    assert run.status is RunStatus.FAILED
    assert "exited with code 3" in run.error


def test_killed_worker_fails_the_run(engine):
    rid = engine.start_run(ProbeJob(steps=1000, step_s=0.1))
    assert wait_for(lambda: engine.get_run(rid).status is RunStatus.RUNNING)
    os.kill(engine.get_run(rid).pid, signal.SIGKILL)
    run = engine.wait_run(rid, timeout=10)
    assert run.status is RunStatus.FAILED and "SIGKILL" in run.error


def test_orphaned_run_becomes_interrupted_on_restart(tmp_path):
    settings = Settings(home=tmp_path / "ws", offline=True)
    settings.prepare()
    # the first server's store only: an Engine's runner would start this queued run itself before it is altered
    first = Store(settings.db_path)
    rid = first.add_run("test_probe", ProbeJob().model_dump_json(), JOB_KINDS["test_probe"].target, None)
    gone = subprocess.Popen(["true"])
    gone.wait()
    first.update_run(rid, status="running", pid=gone.pid)  # a worker that no longer exists
    first.close()
    second = Engine(settings)
    run = second.get_run(rid)
    assert run.status is RunStatus.INTERRUPTED and "worker process is gone" in run.error
    second.close()


def test_restarted_engine_adopts_a_live_worker(tmp_path):
    settings = Settings(home=tmp_path / "ws", offline=True)
    first = Engine(settings)
    rid = first.start_run(ProbeJob(steps=30, step_s=0.1))
    assert wait_for(lambda: first.get_run(rid).status is RunStatus.RUNNING)
    first.runner.shutdown()  # the old server stops watching; its worker goes on
    second = Engine(settings)
    assert second.get_run(rid).status is RunStatus.RUNNING
    run = second.wait_run(rid, timeout=60)
    assert run.status is RunStatus.SUCCEEDED
    second.close()


def test_unknown_config_fields_are_refused():
    with pytest.raises(Exception) as info:
        ProbeJob.model_validate({"steps": 2, "nonsense": 1})
    assert "nonsense" in str(info.value)
