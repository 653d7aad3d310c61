"""The job queue: exclusive jobs share Settings.max_parallel_jobs slots, the others start at once; queued runs
show their position, can be cancelled before they start, and survive a restart of the server."""
import re

from engine import Engine, Settings
from engine.records import RunStatus
from slmops_ui.job_indicator import jobs_text
from slmops_ui.job_panel import status_markdown  # imported here: importing gradio inside the test took longer
                                                 # than the first run's 3 s when this file ran alone
from tests.jobs_for_tests import ExclusiveProbe, ProbeJob


def wait_status(engine, run_id, status, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = engine.get_run(run_id)
        if run.status is status:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is {engine.get_run(run_id).status}, not {status}")


def test_exclusive_jobs_wait_in_order_and_light_jobs_do_not(engine):
    first = engine.start_run(ExclusiveProbe(steps=30, step_s=0.1))
    second = engine.start_run(ExclusiveProbe(steps=2))
    third = engine.start_run(ExclusiveProbe(steps=2))
    light = engine.start_run(ProbeJob(steps=2))
    wait_status(engine, first, RunStatus.RUNNING)
    assert engine.get_run(second).queue_position == 1 and engine.get_run(third).queue_position == 2
    assert "Waiting in the queue: position 2" in status_markdown(engine, third)  # what the job panel shows
    line = jobs_text(engine)  # the job indicator under the header, on every tab
    assert f"run {first} · " in line and f"run {third} · {engine.get_run(third).kind} · queued (2)" in line
    assert re.search(rf"run {first} · .* · CPU \d+ % · \d+\.\d GiB", line), line  # what its process uses
    assert re.search(r"machine: CPU \d+ % of \d+ cores, memory \d+\.\d of \d+\.\d GiB$", line), line
    assert engine.wait_run(light, timeout=30).status is RunStatus.SUCCEEDED  # not held up by the queue
    assert engine.get_run(first).status is RunStatus.RUNNING and engine.get_run(second).pid is None
    engine.cancel_run(first)
    runs = [engine.wait_run(r, timeout=60) for r in (first, second, third)]
    assert [r.status for r in runs] == [RunStatus.CANCELLED, RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    # one slot: each started after the one before it ended
    assert runs[0].finished_at <= runs[1].started_at and runs[1].finished_at <= runs[2].started_at
    assert all(r.queue_position is None for r in runs)


def test_two_slots_run_two_at_once(tmp_path):
    engine = Engine(Settings(home=tmp_path / "ws", offline=True, max_parallel_jobs=2))
    try:
        a, b, c = (engine.start_run(ExclusiveProbe(steps=20, step_s=0.1)) for _ in range(3))
        wait_status(engine, a, RunStatus.RUNNING)
        wait_status(engine, b, RunStatus.RUNNING)
        assert engine.get_run(c).queue_position == 1
        runs = [engine.wait_run(r, timeout=60) for r in (a, b, c)]
        assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 3, [(r.id, r.status, r.error) for r in runs]
        assert runs[2].started_at >= min(runs[0].finished_at, runs[1].finished_at)
    finally:
        engine.close()


def test_a_queued_run_can_be_cancelled_before_it_starts(engine):
    first = engine.start_run(ExclusiveProbe(steps=20, step_s=0.1))
    queued = engine.start_run(ExclusiveProbe(steps=2))
    run = engine.cancel_run(queued)
    assert run.status is RunStatus.CANCELLED and run.started_at is None
    assert engine.wait_run(first, timeout=60).status is RunStatus.SUCCEEDED
    assert engine.get_run(queued).status is RunStatus.CANCELLED  # never started afterwards


def test_queued_runs_survive_a_restart_of_the_server(tmp_path):
    home = tmp_path / "ws"
    server = Engine(Settings(home=home, offline=True))
    running = server.start_run(ExclusiveProbe(steps=20, step_s=0.1))
    queued = server.start_run(ExclusiveProbe(steps=2))
    wait_status(server, running, RunStatus.RUNNING)
    server.runner.shutdown()  # the server goes away; its worker keeps running in its own session
    server.close()
    restarted = Engine(Settings(home=home, offline=True))
    try:
        assert restarted.get_run(queued).status is RunStatus.QUEUED
        assert restarted.wait_run(running, timeout=60).status is RunStatus.SUCCEEDED
        assert restarted.wait_run(queued, timeout=60).status is RunStatus.SUCCEEDED
    finally:
        restarted.close()


def test_eta_follows_the_pace_of_the_last_minutes(engine, monkeypatch):
    """A job whose first stage is slow (distill's layer importance) and whose next is fast (training steps): the
    ETA takes the pace of the last 3 minutes, not the whole run's; none in the first 15 s."""
    from engine.jobs import context

    clock = [1000.0]
    monkeypatch.setattr(context.time, "monotonic", lambda: clock[0])
    run_id = engine.store.add_run("selftest", "{}", "local", None)
    ctx = context.JobContext(run_id, engine.store, engine.settings)
    try:
        ctx.progress(0.02, "loading")
        assert engine.get_run(run_id).eta_s is None  # no pace yet
        for t, f in ((60, 0.04), (120, 0.06), (240, 0.1), (270, 0.15), (300, 0.2)):
            clock[0] = 1000.0 + t
            ctx.progress(f, "working")
        # the whole run's pace would say 300 s × 0.8 / 0.2 = 1200 s; the last 180 s moved 0.06 → 0.2
        assert abs(engine.get_run(run_id).eta_s - 0.8 / (0.14 / 180)) < 1e-6
    finally:
        ctx.cancel_event.set()


def test_a_plan_gives_each_phase_its_own_pace(engine, monkeypatch):
    """A fine-tune scores 100 held-out examples (0.6 s each), trains 200 steps (6 s each, timed at the start), then
    scores again: during the first scoring the ETA already counts the training at its own pace (the run's pace
    so far would promise a tenth of the time), and the bar is the elapsed share of the time, never going back."""
    from engine.jobs import context

    clock = [1000.0]
    monkeypatch.setattr(context.time, "monotonic", lambda: clock[0])
    run_id = engine.store.add_run("selftest", "{}", "local", None)
    ctx = context.JobContext(run_id, engine.store, engine.settings)
    try:
        plan = context.Plan(ctx, {"before": 101, "train": 200, "after": 101}, same={"after": "before"})
        plan.guess["train"] = 6.0
        bars = []

        def at(t, phase, fraction):
            clock[0] = 1000.0 + t
            plan.span(phase).progress(fraction, phase)
            run = engine.get_run(run_id)
            bars.append(run.progress)
            return run

        assert at(20, "before", 0.0).eta_s is None  # nothing measured of the scoring yet
        run = at(50, "before", 0.5)  # 50.5 units in 30 s
        pace = 30 / 50.5
        assert abs(run.eta_s - (50.5 * pace + 200 * 6.0 + 101 * pace)) < 1e-6
        assert abs(run.progress - 50 / (50 + run.eta_s)) < 1e-9
        at(80, "before", 1.0)
        at(86, "train", 1 / 200)
        run = at(146, "train", 11 / 200)  # 10 steps in 60 s: measured 6 s/step
        assert abs(run.eta_s - (189 * 6.0 + 101 * 30 / 50.5)) < 1e-6
        run = at(206, "train", 16 / 200)  # slower now (12 s/step): the measure follows
        assert run.eta_s > 184 * 6.0 + 60
        assert bars == sorted(bars) and bars[-1] < 0.2
    finally:
        ctx.cancel_event.set()


def test_a_plan_inside_a_part_of_a_set_moves_the_part_of_the_bar_and_times_the_whole_run(engine, monkeypatch):
    """The third of four adapters (0.5-0.75 of the run's bar): its Plan's bar lands inside the part's share, its
    stages carry the part's name, and the ETA covers the parts to come at the pace the run has kept (not only the
    part's own end)."""
    from engine.jobs import context

    clock = [1000.0]
    monkeypatch.setattr(context.time, "monotonic", lambda: clock[0])
    run_id = engine.store.add_run("selftest", "{}", "local", None)
    ctx = context.JobContext(run_id, engine.store, engine.settings)
    try:
        clock[0] = 1200.0  # the first part took 200 s
        part = context.PartContext(ctx, "label-adapter", 0.5, 0.75, {})
        plan = context.Plan(part, {"train": 100})
        plan.guess["train"] = 2.0
        clock[0] = 1250.0  # 25 steps in 50 s: 150 s left in this part, the part ends at run time 400 s
        plan.span("train").progress(0.25, "step 25/100")
        run = engine.get_run(run_id)
        assert run.stage == "label-adapter: step 25/100"
        assert abs(run.progress - (0.5 + 0.25 * 50 / 200)) < 1e-9  # the part's own elapsed share, mapped
        assert abs(run.eta_s - (400 / 0.75 - 250)) < 1e-6  # 400 s reach 3/4 of the run: 533 s in all
    finally:
        ctx.cancel_event.set()
