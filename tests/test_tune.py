"""Hyperparameter studies (job `tune`) on the tiny model: trials are runs linked to their study, the pruner stops a
bad trial ("pruned", not "failed"), a study continues where it stopped, and two worker processes share one study
while one of them is killed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine import RunStatus, TuneConfig
from engine.tuning import open_study, trial_rows
from tests.helpers import ROOT

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"
EVAL = ROOT / "assets" / "datasets" / "request_to_json.eval.jsonl"


def base(tmp_path: Path, **changes) -> dict:
    train, evals = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:48]))
    evals.write_text("".join(EVAL.read_text().splitlines(keepends=True)[:8]))
    return {"model_id": "tiny", "train_path": str(train), "eval_path": str(evals), "max_steps": 12, "batch_size": 4,
            "max_length": 96, "eval_steps": 4, "save_steps": 12, "eval_max_examples": 0, "lora_r": 4,
            "lora_alpha": 8, **changes}


def test_a_study_runs_its_trials_as_runs_prunes_a_bad_one_and_continues(tiny_engine, tmp_path, monkeypatch):
    # The grid with seed 1 tries the good rate first; the other learns nothing, and the median pruner stops it.
    # 80 steps of ≥ 0.1 s (a paused report each): the study, polling every 2 s, sees an eval before the trial ends
    # (unpaused, a fast machine trained the tiny trial's 80 steps between two polls and it completed)
    monkeypatch.setenv("SLMOPS_FAULT", "pause=0.1")
    config = TuneConfig(base=base(tmp_path, max_steps=80, save_steps=80),
                        space={"learning_rate": {"choices": [5e-2, 1e-7]}}, sampler="grid", seed=1,
                        objective="eval_loss", trials=2, pruner="median", pruner_startup_trials=1)
    rid = tiny_engine.start_run(config)
    run = tiny_engine.wait_run(rid, timeout=400)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [x.message for x in tiny_engine.run_logs(rid)][-5:])
    trials = tiny_engine.study_trials(rid)
    assert [(t["trial"], t["state"]) for t in trials] == [(0, "complete"), (1, "pruned")], trials
    good, bad = (tiny_engine.get_run(t["run"]) for t in trials)
    assert good.status is RunStatus.SUCCEEDED and good.parent_run_id == rid
    assert good.summary["eval_loss_after"] == trials[0]["value"] and "score_before" not in good.summary
    assert bad.status is RunStatus.PRUNED and bad.parent_run_id == rid and "pruned" in bad.error
    assert trials[0]["steps"] == 80 and trials[1]["steps"] < 80  # the pruned trial stopped early
    assert trials[1]["value"] is None and trials[1]["note"].startswith("pruned at step ")
    s = run.summary
    assert (s["complete"], s["pruned"], s["failed"], s["best_trial"], s["best_run"]) == (1, 1, 0, 0, good.id)
    assert s["steps"] == 80 + trials[1]["steps"]
    study = s["study"]
    assert tiny_engine.store.has_model(f"{study}-t0") and not tiny_engine.store.has_model(f"{study}-t1")

    # the same study, one more trial: it continues from the trials it has (numbering and budget)
    more = config.model_copy(update={"study_name": study, "trials": 3, "sampler": "random"})
    rid2 = tiny_engine.start_run(more)
    run2 = tiny_engine.wait_run(rid2, timeout=400)
    assert run2.status is RunStatus.SUCCEEDED, run2.error
    trials = tiny_engine.study_trials(rid2)
    assert [t["trial"] for t in trials] == [0, 1, 2] and trials[2]["state"] in ("complete", "pruned")
    assert tiny_engine.get_run(trials[2]["run"]).parent_run_id == rid2


def test_two_workers_share_a_study_and_one_killed_fails_only_its_trial(tiny_engine, tmp_path):
    home = tiny_engine.settings.home
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    # trials of 200 steps: the victim is killed while one runs (not between two)
    config = TuneConfig(base=base(tmp_path, max_steps=200, save_steps=200, eval_steps=50),
                        space={"learning_rate": {"low": 1e-3, "high": 5e-2, "log": True}},
                        objective="eval_loss", pruner="none", trials=4)
    open_study(config, url, "shared")  # made once; each worker finds its config in the storage
    env = dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "engine", "tune", "worker", "--storage", url, "--study", "shared"]
    def worker():
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # the victim starts first and is killed mid-trial once the survivor has joined the study
    victim = worker()

    def victims_trial_run():
        studies = [r for r in tiny_engine.list_runs(kind="tune") if r.pid == victim.pid]
        return next((r for r in tiny_engine.list_runs(kind="finetune", status="running")
                     if studies and r.parent_run_id == studies[0].id and 0.1 < r.progress < 0.6), None)

    deadline = time.monotonic() + 240
    while (trial_run := victims_trial_run()) is None:
        assert time.monotonic() < deadline and victim.poll() is None, "the first worker never ran a trial"
        time.sleep(0.5)
    survivor = worker()
    deadline = time.monotonic() + 120
    while not any(r.pid == survivor.pid for r in tiny_engine.list_runs(kind="tune")):
        assert time.monotonic() < deadline and survivor.poll() is None, "the second worker never joined"
        time.sleep(0.5)
    while (trial_run := victims_trial_run()) is None:  # again: the trial seen first may have ended meanwhile
        assert time.monotonic() < deadline + 240 and victim.poll() is None, "the first worker stopped running trials"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    out, err = survivor.communicate(timeout=600)
    victim.communicate()
    assert survivor.returncode == 0, err[-2000:]
    assert "database is locked" not in err + out

    study = open_study(config, url, "shared", create=False)
    trials = study.get_trials(deepcopy=False)
    states = sorted(t.state.name for t in trials)
    assert states.count("COMPLETE") == 4 and states.count("RUNNING") == 0, states
    killed = [t for t in trials if t.user_attrs.get("run_id") == trial_run.id]
    assert len(killed) == 1 and killed[0].state.name == "FAIL"  # marked failed by the survivor (no heartbeat)
    [row] = [r for r in trial_rows(study) if r["run"] == trial_run.id]  # and the trials table says why
    assert row["state"] == "fail" and "no heartbeat" in row["note"], row
    run_ids = [t.user_attrs["run_id"] for t in trials if "run_id" in t.user_attrs]
    assert len(run_ids) == len(set(run_ids)) == len(trials)  # one run per trial, none shared, none lost
    stopped = tiny_engine.wait_run(trial_run.id, timeout=30)  # the killed worker's trial stops itself
    assert stopped.status is RunStatus.CANCELLED, stopped.status
    assert any("is gone" in x.message for x in tiny_engine.run_logs(trial_run.id))
    for t in trials:
        if t.state.name == "COMPLETE":
            assert tiny_engine.get_run(t.user_attrs["run_id"]).status is RunStatus.SUCCEEDED
    print(json.dumps({"trials": [(t.number, t.state.name, t.user_attrs.get("run_id"), t.user_attrs.get("note", ""))
                                 for t in trials], "killed_run": trial_run.id, "killed_run_now": stopped.status.value}))


def test_a_distill_study_tunes_the_kd_weight(tiny_engine, tmp_path):
    data = base(tmp_path)
    config = TuneConfig(base_kind="distill", objective="heldout_ppl", trials=1,
                        base={"teacher_model_id": "tiny", "train_path": data["train_path"], "keep_layers": 1,
                              "max_steps": 4, "eval_steps": 2, "batch_size": 4, "max_length": 96,
                              "general_ppl_tokens": 0, "eval_max_examples": 2, "agreement_tokens": 4,
                              "teacher_top_k": 8},
                        space={"alpha": {"low": 0.0, "high": 1.0}, "temperature": {"choices": [1.0, 2.0]}})
    rid = tiny_engine.start_run(config)
    run = tiny_engine.wait_run(rid, timeout=400)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [x.message for x in tiny_engine.run_logs(rid)][-5:])
    (trial,) = tiny_engine.study_trials(rid)
    student = tiny_engine.get_run(trial["run"])
    assert trial["state"] == "complete" and student.kind == "distill" and student.parent_run_id == rid
    assert trial["value"] == student.summary["heldout_ppl_student"] and trial["steps"] == 4
    best = tiny_engine.best_trial_config(rid)  # what "clone the best trial" puts in the Distill form
    assert best.kind == "distill" and best.alpha == student.config["alpha"] and best.output_name is None


def test_successive_halving_compares_trials_at_their_evaluation_steps(tmp_path):
    """Rungs at eval_steps, 3× and 9× it: a trial is compared where it reports, and only a third go on from each."""
    from engine.tuning import make_pruner

    pruner = make_pruner(TuneConfig(base=base(tmp_path, eval_steps=15), pruner="halving"))
    assert (pruner._min_resource, pruner._reduction_factor) == (15, 3)
    default = make_pruner(TuneConfig(base={k: v for k, v in base(tmp_path).items() if k != "eval_steps"},
                                     pruner="halving"))
    assert default._min_resource == 25  # the fine-tune's own default eval_steps
