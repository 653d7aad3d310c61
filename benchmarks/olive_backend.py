"""Our fine-tune backend against Microsoft Olive's (`backend: olive`, `olive finetune`) on the bundled request → JSON
task, same hyperparameters (the fine-tune job's defaults: LoRA r 8 on q_proj, v_proj, 2 epochs at 1e-3, batch 4,
max length 128), same data (the task's evaluation file held out), run one after the other in this process's
workspace; then both adapters scored on the task by the evaluate job (transformers, greedy, 95 % interval).

    python benchmarks/olive_backend.py [--home DIR] [--threads 2] [--examples 100]

Prints, per backend: the task score with its interval, the training steps, the last training loss, the time Olive's
process (or our Trainer loop) took and the run's wall time; the Olive version and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "assets" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(ROOT / "workspace"), help="workspace (default: workspace/)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=100, help="task examples scored (0: all)")
    parser.add_argument("--suffix", default="", help="added to the adapters' names (to run again in one workspace)")
    args = parser.parse_args()
    from engine import Engine, EvaluateConfig, FineTuneConfig, Settings
    from engine.olive import olive_version

    engine = Engine(Settings(home=Path(args.home), offline=True))
    model = engine.ensure_default_model()
    if model.run_id and not model.ready:  # a fresh workspace converts the bundled GGUF first
        engine.wait_run(model.run_id, timeout=900)
    base = model.id
    rows = []
    for backend in ("transformers", "olive"):
        name = f"bench-{backend}{args.suffix}"
        print(f"fine-tuning {name} …", file=sys.stderr, flush=True)
        run = engine.wait_run(engine.start_run(FineTuneConfig(
            model_id=base, backend=backend, train_path=str(DATA / "request_to_json.train.jsonl"),
            eval_path=str(DATA / "request_to_json.eval.jsonl"), eval_max_examples=0, output_name=name,
            threads=args.threads)), timeout=14400)
        assert run.status.value == "succeeded", (run.error, [x.message for x in engine.run_logs(run.id)][-8:])
        losses = [m.value for m in engine.run_metrics(run.id) if m.name == "train_loss"]
        score = engine.wait_run(engine.start_run(EvaluateConfig(
            model_id=name, task="request_to_json", limit=args.examples, backend="transformers",
            threads=args.threads)), timeout=7200)
        assert score.status.value == "succeeded", score.error
        s, e = run.summary, score.summary
        rows.append({"backend": backend, "adapter": name, "run": run.id, "task_score": e["score"],
                     "ci": [e["ci_low"], e["ci_high"]], "examples": e["examples"], "steps": len(losses),
                     "last_train_loss": round(losses[-1], 4) if losses else None,
                     "olive_process_s": s.get("olive_train_s"), "run_wall_s": s.get("wall_s")})
    print(json.dumps({"olive": olive_version(), "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "threads": args.threads, "rows": rows}, indent=1))
    points = 100 * (rows[1]["task_score"] - rows[0]["task_score"])
    print(f"Olive − ours: {points:+.1f} points on request_to_json (goal: within 5)")
    engine.close()


if __name__ == "__main__":
    main()
