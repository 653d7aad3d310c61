"""Crash suite: runs of every job kind are killed at random points (an exception inside the job, SIGTERM, SIGKILL),
the server itself is killed mid-run and restarted, and a worker runs out of disk. Afterwards every run is final and
says what happened, the store passes PRAGMA integrity_check, no record was lost, and every registered model and
artifact has complete files (outputs are written to `*.partial` and renamed; leftovers are removed).

Bounded: 12 kinds (and fine-tune on Olive) on the tiny model, each killed twice: SIGKILL, and an exception or
SIGTERM (alternating over the kinds, so each of the two reaches 6 or 7 of them; ~8 s a run); plus 2 server kills
and 1 full disk. SLMOPS_CRASH_SEED picks the kill points and which kinds get which of the two (default 1)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import Engine, Settings
from engine.configs import (AdapterSetConfig, AddAdaptersConfig, BenchmarkConfig, DistillConfig, DistillSweepConfig,
                            EvaluateConfig, FineTuneConfig, GenerateDataConfig, GgufConfig, QuantizeConfig,
                            SelfTestConfig, TuneConfig)
from engine.records import RunStatus
from engine.training import last_checkpoint
from tests.helpers import ROOT, build_tiny_llama
from tests.test_adapters import lora_adapter

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"
FAULTS = ("exception", "SIGTERM", "SIGKILL")
EXPECTED = {"exception": (RunStatus.FAILED, "injected fault"),
            "SIGTERM": (RunStatus.CANCELLED, "SIGTERM"),
            "SIGKILL": (RunStatus.FAILED, "killed by signal SIGKILL")}


def job_configs(data: Path) -> dict:
    common = dict(train_path=str(data), max_steps=12, batch_size=4, max_length=96, eval_steps=6, save_steps=4,
                  eval_max_examples=2)
    return {
        "finetune": FineTuneConfig(model_id="tiny", eval_ratio=0.1, eval_max_new_tokens=4, lora_r=4, lora_alpha=8,
                                   **common),
        # Olive's process is the worker's child: it ends with it (a SIGKILLed worker's too)
        "finetune/olive": FineTuneConfig(model_id="tiny", backend="olive", eval_ratio=0.1, eval_max_new_tokens=4,
                                         lora_r=4, lora_alpha=8, **common),
        # two adapters, the first scored on a task: a kill lands in either, or in the scoring
        "adapter_set": AdapterSetConfig(
            model_id="tiny", eval_ratio=0.1, eval_max_new_tokens=4, lora_r=4, lora_alpha=8,
            **{k: v for k, v in common.items() if k != "train_path"},
            adapters=[{"name": "set-a", "train_path": str(data), "task": "request_to_json"},
                      {"name": "set-b", "train_path": str(data)}]),
        "generate_data": GenerateDataConfig(teacher_model_id="tiny", max_prompts=24, batch_size=2, max_new_tokens=16,
                                            drop_truncated=False, min_chars=0),
        "distill": DistillConfig(teacher_model_id="tiny", keep_layers=1, eval_ratio=0.1, agreement_tokens=4,
                                 general_ppl_tokens=256, **common),
        "distill_sweep": DistillSweepConfig(
            teacher_model_id="tiny", sizes=[1], eval_ratio=0.1, agreement_tokens=4, general_ppl_tokens=0,
            task="request_to_json", task_limit=2, **common),
        "quantize": QuantizeConfig(model_id="tiny", precision="int4", verify_tokens=256),
        "gguf": GgufConfig(model_id="tiny", gguf_type="q8_0", verify_tokens=256),
        # two models: their timing interleaved, both worker processes alive at once (a kill must end both)
        "benchmark": BenchmarkConfig(model_ids=["tiny", "tiny-slots"], prompt_count=2, gen_length="short",
                                     repetitions=4, warmup=1, time_budget_s=0, ppl_tokens=256, mc_questions=8,
                                     agreement_prompts=0, threads=1),
        "selftest": SelfTestConfig(model_id="tiny", max_new_tokens=24),
        "evaluate": EvaluateConfig(model_id="tiny", task="request_to_json", limit=24, backend="transformers"),
        # each fault adds its own adapter (prepared below) to an export made with one
        "add_adapters": AddAdaptersConfig(model_id="tiny-slots", adapters=["ad-exception"], adapter_examples=4,
                                          min_agreement=0),
        # one trial: the study's bar follows its trial's (a killed study's trial stops itself)
        "tune": TuneConfig(base={**common, "model_id": "tiny", "eval_ratio": 0.1, "eval_max_examples": 0,
                                 "lora_r": 4, "lora_alpha": 8}, objective="eval_loss", trials=1,
                           space={"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}),
    }


def wait_until(predicate, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def kill_point(run, at: float):
    """The run, once it is running past `at` of its progress (or already over); else None."""
    return run if run.status.final or (run.status is RunStatus.RUNNING and run.progress >= at and run.pid) else None


def command_lines() -> list[str]:
    lines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return lines


def files_complete(path: Path, size_bytes: int | None) -> bool:
    if not path.exists():
        return False
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return size_bytes is None or size == size_bytes


def check_workspace(engine: Engine, run_ids: list[int], models_before: set[str]) -> dict:
    """What the issue asks to see after the faults: returns the figures, asserts the goals. Runs the jobs started
    themselves (a killed study's trial, which notices and stops on its own) count too, once they had time to."""
    try:
        wait_until(lambda: not engine.active_runs(), 120, 0.2)
    except AssertionError:
        pass  # reported below as non-final
    runs = {r.id: r for r in engine.list_runs(limit=None)}
    run_ids = sorted(set(run_ids) | set(runs))
    non_final = [i for i in run_ids if not runs[i].status.final]
    lost = [i for i in run_ids if i not in runs] + sorted(models_before - {m.id for m in engine.list_models()})
    unexplained = [i for i in run_ids if runs[i].status is not RunStatus.SUCCEEDED and not runs[i].error]
    integrity = engine.store.db.execute("PRAGMA integrity_check").fetchone()[0]
    incomplete = [m.id for m in engine.list_models() if m.ready and not files_complete(Path(m.path), m.size_bytes)]
    incomplete += [a.path for i in run_ids for a in engine.run_artifacts(i) if not files_complete(Path(a.path),
                                                                                                   a.size_bytes)]
    partial = [str(p) for p in engine.settings.home.rglob("*.partial")]
    figures = {"runs": len(run_ids), "non_final": len(non_final), "lost": len(lost), "unexplained": unexplained,
               "integrity": integrity, "incomplete": incomplete, "partial_left": partial}
    assert (non_final, lost, unexplained, integrity, incomplete, partial) == ([], [], [], "ok", [], []), figures
    return figures


@pytest.fixture
def crash_engine(tmp_path, tiny_model_dir):
    engine = Engine(Settings(home=tmp_path / "ws", offline=True))
    engine.add_model(str(tiny_model_dir), name="tiny")
    yield engine
    for run in engine.active_runs():
        engine.cancel_run(run.id)
        engine.wait_run(run.id, timeout=20)
    engine.close()


def test_runs_of_every_kind_killed_at_random_points_end_final_and_lose_nothing(crash_engine, tmp_path, monkeypatch):
    rng = random.Random(int(os.environ.get("SLMOPS_CRASH_SEED", "1")))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:40]))
    for name in ("ad-first", *(f"ad-{fault.lower()}" for fault in FAULTS)):
        lora_adapter(crash_engine, "tiny", tmp_path / name, name, ["q_proj", "v_proj"], 4, seed=len(name))
    slots = crash_engine.wait_run(crash_engine.start_run(QuantizeConfig(
        model_id="tiny", adapters=["ad-first"], output_name="tiny-slots", verify_tokens=0, adapter_examples=2,
        min_agreement=0)), timeout=300)
    assert slots.status is RunStatus.SUCCEEDED, slots.error
    models_before = {m.id for m in crash_engine.list_models()}
    started, injected, outcomes = [], {f: 0 for f in FAULTS}, {}
    flip = rng.randrange(2)
    for i, (kind, config) in enumerate(job_configs(data).items()):
        for fault in ("SIGKILL", FAULTS[(i + flip) % 2]):
            at = round(rng.uniform(0.05, 0.7), 2)
            monkeypatch.setenv("SLMOPS_FAULT", f"raise@{at}" if fault == "exception" else "")
            if kind in ("quantize", "gguf"):
                config = config.model_copy(update={"output_name": f"tiny-{kind}-{fault.lower()}"})
            if kind == "adapter_set":
                config = config.model_copy(update={"adapters": [
                    a.model_copy(update={"name": f"{a.name}-{fault.lower()}"}) for a in config.adapters]})
            if kind == "add_adapters":
                config = config.model_copy(update={"adapters": [f"ad-{fault.lower()}"]})
            run_id = crash_engine.start_run(config)
            started.append(run_id)
            if fault != "exception":
                run = wait_until(lambda rid=run_id, at=at: kill_point(crash_engine.get_run(rid), at), 180)
                if not run.status.final:
                    os.kill(run.pid, getattr(signal, fault))
            run = crash_engine.wait_run(run_id, timeout=180)
            outcomes[f"{kind}/{fault}@{at}"] = (run.status.value, (run.error or "")[:60])
            status, words = EXPECTED[fault]
            if run.status is RunStatus.SUCCEEDED:  # finished before the kill point was reached: not a kill
                continue
            injected[fault] += 1
            assert run.status is status and words in run.error, (kind, fault, run.status, run.error)
    monkeypatch.delenv("SLMOPS_FAULT")
    figures = check_workspace(crash_engine, started, models_before)
    figures["kills"] = injected
    home = str(crash_engine.settings.home)

    def children_left():  # Olive's processes and the benchmark's workers
        return [c for c in command_lines() if (" -m olive " in c or " -m engine.bench_worker " in c) and home in c]
    try:
        wait_until(lambda: not children_left(), 30, 0.5)
    except AssertionError:
        pass
    assert not children_left(), children_left()  # no child process outlived its run
    print(json.dumps({"figures": figures, "outcomes": outcomes}, indent=1))
    assert sum(injected.values()) >= 10 and all(injected.values()), outcomes  # most runs were killed mid-way
    # the workspace still works: the model answers
    assert crash_engine.chat("tiny", [{"role": "user", "content": "hi"}])


SERVER = """
import sys, time
from engine import Engine, Settings
from engine.configs import FineTuneConfig
engine = Engine(Settings(home=sys.argv[1], offline=True))
ids = [engine.start_run(FineTuneConfig(model_id="tiny", train_path=sys.argv[2], max_steps=steps, batch_size=4,
                                       max_length=96, eval_steps=100, save_steps=4, eval_max_examples=0))
       for steps in (int(sys.argv[3]), 4)]
print(" ".join(map(str, ids)), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("worker_too", [False, True], ids=["server-only", "server-and-worker"])
def test_server_killed_mid_run_and_restarted(crash_engine, tmp_path, worker_too):
    home = crash_engine.settings.home
    data = tmp_path / "train.jsonl"
    data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:40]))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(home), str(data), "40"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    running, queued = map(int, server.stdout.readline().split())
    # mid-run: after its first complete checkpoint (step 4 of 40)
    wait_until(lambda: last_checkpoint(home / "runs" / str(running)), 120)
    run = crash_engine.get_run(running)
    assert crash_engine.get_run(queued).queue_position == 1
    server.kill()
    server.wait()
    if worker_too:
        os.kill(run.pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{run.pid}").exists() or
                   "Z" in Path(f"/proc/{run.pid}/stat").read_text().split()[2], 10)
    restarted = Engine(Settings(home=home, offline=True))  # adopts a live worker, settles a dead one
    try:
        first = restarted.wait_run(running, timeout=240)
        second = restarted.wait_run(queued, timeout=240)  # the queue survives the restart and moves on
        if worker_too:
            assert first.status is RunStatus.INTERRUPTED and "worker process is gone" in first.error
        else:
            assert first.status is RunStatus.SUCCEEDED, first.error
        assert second.status is RunStatus.SUCCEEDED, second.error
        check_workspace(restarted, [running, queued], {"tiny"})
        if worker_too:  # the interrupted run resumes from its last complete checkpoint
            resumed = restarted.wait_run(restarted.resume_run(running), timeout=240)
            assert resumed.status is RunStatus.SUCCEEDED, resumed.error
    finally:
        restarted.close()


def test_a_full_disk_fails_the_run_with_a_clear_message_and_damages_nothing(crash_engine, tmp_path, monkeypatch):
    big = build_tiny_llama(tmp_path / "wide", hidden=256)  # ~5 MB of safetensors: more than the worker may write
    crash_engine.add_model(str(big), name="wide")
    before = {m.id: (m.path, m.size_bytes) for m in crash_engine.list_models()}
    monkeypatch.setenv("SLMOPS_FAULT", "fsize=3000000")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:16]))
    run_id = crash_engine.start_run(FineTuneConfig(model_id="wide", method="full", train_path=str(data),
                                                   max_steps=2, batch_size=4, max_length=64, eval_steps=100,
                                                   save_steps=100, eval_max_examples=0, output_name="wide-ft"))
    run = crash_engine.wait_run(run_id, timeout=180)
    monkeypatch.delenv("SLMOPS_FAULT")
    assert run.status is RunStatus.FAILED
    assert "workspace could not be written" in run.error and "Free disk space" in run.error, run.error
    assert not crash_engine.store.has_model("wide-ft")
    assert {m.id: (m.path, m.size_bytes) for m in crash_engine.list_models()} == before
    check_workspace(crash_engine, [run_id], set(before))


def test_disk_and_permission_errors_are_recognised_through_library_wrappers():
    from engine.worker import _disk_trouble

    assert _disk_trouble(PermissionError(13, "Permission denied", "/ws/models/x"))
    assert _disk_trouble(OSError(28, "No space left on device"))
    try:  # safetensors and others re-raise the OSError as their own error type
        try:
            raise OSError(27, "File too large")
        except OSError as inner:
            raise RuntimeError("Error while serializing") from inner
    except RuntimeError as wrapped:
        assert _disk_trouble(wrapped)
    assert not _disk_trouble(ValueError("learning rate must be positive"))
