"""Resume fidelity: a LoRA run cancelled mid-way and resumed from its checkpoint against the same run uninterrupted.

Usage: .venv/bin/python benchmarks/finetune_resume.py [--steps 40] [--home DIR]
Same seed and settings on the bundled SmolLM2 and the example dataset; prints both final eval losses and their
relative difference (goal: within 2 %).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "assets" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()

    from engine import DEFAULT_MODEL_ID, Engine, FineTuneConfig, Settings

    engine = Engine(Settings(home=args.home or Path(tempfile.mkdtemp(prefix="slmops-resume-")) / "ws", offline=True))
    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id)
    config = FineTuneConfig(model_id=DEFAULT_MODEL_ID, train_path=str(DATA / "request_to_json.train.jsonl"),
                            eval_path=str(DATA / "request_to_json.eval.jsonl"), max_steps=args.steps,
                            learning_rate=1e-3, save_steps=max(1, args.steps // 4), eval_steps=args.steps,
                            eval_max_examples=0)
    straight = engine.wait_run(engine.start_run(config))
    assert straight.status.value == "succeeded", straight.error

    rid = engine.start_run(config)
    while engine.get_run(rid).progress < 0.5:
        time.sleep(0.2)
    engine.cancel_run(rid)
    cancelled = engine.wait_run(rid)
    resumed = engine.wait_run(engine.resume_run(rid))
    assert resumed.status.value == "succeeded", resumed.error
    a, b = straight.summary["eval_loss_after"], resumed.summary["eval_loss_after"]
    print(f"steps {args.steps}; run {rid} {cancelled.status.value} ({cancelled.error}), "
          f"run {resumed.id} resumed it to step {resumed.summary['steps']}")
    print(f"eval loss uninterrupted: {a:.4f}  cancelled+resumed: {b:.4f}  relative difference: {abs(a - b) / a:.2%}")


if __name__ == "__main__":
    main()
