"""The goals of the tuning issue on the bundled model and the example task: a 12-trial LoRA study (default space,
default pruner: successive halving) — its wall time, and its best trial against the baseline trial (the default
fine-tune settings, measured alike) with 95 % intervals — and the same study without pruning (same seed and
sampler): the training steps pruning saved.

    SLMOPS_HOME=/tmp/ws python benchmarks/tune_study.py                # runs both studies (about 1.5 h on 2 cores)
    SLMOPS_HOME=/tmp/ws python benchmarks/tune_study.py --pruner median   # the pruned one with the median pruner
    SLMOPS_HOME=/tmp/ws python benchmarks/tune_study.py --report 2 14  # the figures of two tune runs already made

Each trial: 60 optimizer steps, eval loss every 15 (what the pruner sees), the held-out score on 40 examples.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import DEFAULT_MODEL_ID, Engine, RunStatus, TuneConfig  # noqa: E402
from engine.scoring import wilson_interval  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"model_id": DEFAULT_MODEL_ID,
        "train_path": os.path.join(ROOT, "assets", "datasets", "request_to_json.train.jsonl"),
        "eval_path": os.path.join(ROOT, "assets", "datasets", "request_to_json.eval.jsonl"),
        "max_steps": 60, "eval_steps": 15, "save_steps": 60, "eval_max_examples": 40}


def report(engine: Engine, run_id: int) -> dict:
    run = engine.get_run(run_id)
    rows = engine.study_trials(run_id)
    n = json.loads(run.config_json)["base"]["eval_max_examples"]
    print(f"\nrun {run_id}: study {run.summary.get('study')}, {run.status.value}, wall {run.summary.get('wall_s')} s")
    print(f"{'trial':>5} {'state':>9} {'value':>7} {'steps':>5} {'run':>5}  params")
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.3f}"
        print(f"{r['trial']:>5} {r['state']:>9} {value:>7} {r['steps'] or 0:>5} {r['run'] or '':>5}  {r['params']}"
              + (f"  ({r['note']})" if r["note"] else ""))
    done = [r for r in rows if r["state"] == "complete"]
    best = max(done, key=lambda r: r["value"]) if done else None
    baseline = next((r for r in rows if r["note"].startswith("baseline")), None)
    figures = {"run": run_id, "wall_min": round((run.summary.get("wall_s") or 0) / 60, 1),
               "steps": sum(r["steps"] or 0 for r in rows),
               "complete": len(done), "pruned": sum(r["state"] == "pruned" for r in rows)}
    for name, row in (("best", best), ("baseline", baseline)):
        if row is not None and row["value"] is not None:
            low, high = wilson_interval(round(row["value"] * n), n)
            figures[name] = f"trial {row['trial']}: {row['value']:.3f} [{low:.3f}, {high:.3f}] on {n} examples"
    print(json.dumps(figures))
    return figures


def study(engine: Engine, name: str, pruner: str) -> int:
    config = TuneConfig(base=BASE, objective="score", sampler="tpe", pruner=pruner, trials=12, seed=7,
                        study_name=name)
    run_id = engine.start_run(config)
    run = engine.wait_run(run_id)
    if run.status is not RunStatus.SUCCEEDED:
        print(f"run {run_id} {run.status.value}: {run.error}")
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", nargs=2, type=int, metavar=("PRUNED_RUN", "UNPRUNED_RUN"))
    parser.add_argument("--pruner", choices=("halving", "median"), default="halving",
                        help="the pruned study's pruner (the other study runs without one)")
    args = parser.parse_args()
    engine = Engine()
    if args.report:
        pruned, unpruned = args.report
    else:
        model = engine.ensure_default_model()
        if model.status == "preparing":
            engine.wait_run(model.run_id)
        pruned = study(engine, f"lora-{args.pruner}", args.pruner)
        unpruned = study(engine, "lora-unpruned", "none")
    a, b = report(engine, pruned), report(engine, unpruned)
    saved = 1 - a["steps"] / b["steps"] if b["steps"] else 0.0
    print(f"\npruning: {a['steps']} training steps against {b['steps']} without: {100 * saved:.0f} % saved")


if __name__ == "__main__":
    main()
