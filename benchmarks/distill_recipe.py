"""The default distillation recipe on the bundled teacher, and its ablation (KD vs CE-only), in one run.

Usage: .venv/bin/python benchmarks/distill_recipe.py [--home DIR] [--epochs 4]
Stage 1: the teacher answers the bundled seed prompts (default GenerateDataConfig). Stage 2: a derived student
(default DistillConfig: 10 of 30 layers) trains with the KD loss; then the same student, data and steps with
alpha 0 (cross-entropy only). Prints size, decode speed and quality of teacher and both students.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--epochs", type=float, default=None, help="override the default epochs of stage 2")
    args = parser.parse_args()

    from engine import DEFAULT_MODEL_ID, DistillConfig, Engine, GenerateDataConfig, Settings

    engine = Engine(Settings(home=args.home or Path(tempfile.mkdtemp(prefix="slmops-distill-")) / "ws", offline=True))
    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id)

    t0 = time.perf_counter()
    gen = engine.wait_run(engine.start_run(GenerateDataConfig(teacher_model_id=DEFAULT_MODEL_ID)))
    assert gen.status.value == "succeeded", gen.error
    data = next(d for d in engine.list_datasets() if d.run_id == gen.id)
    print(f"stage 1: {gen.summary} in {time.perf_counter() - t0:.0f} s", flush=True)

    results = {}
    for label, alpha in (("KD (alpha 0.5)", 0.5), ("CE only (alpha 0)", 0.0)):
        extra = {"epochs": args.epochs} if args.epochs else {}
        config = DistillConfig(teacher_model_id=DEFAULT_MODEL_ID, train_path=data.path, alpha=alpha, **extra)
        t1 = time.perf_counter()
        run = engine.wait_run(engine.start_run(config))
        assert run.status.value == "succeeded", run.error
        results[label] = (run, time.perf_counter() - t1)
        print(f"{label}: run {run.id} {run.summary}", flush=True)

    first = next(iter(results.values()))[0].summary
    print(f"\nteacher {DEFAULT_MODEL_ID}: {first['teacher_params_m']} M params, held-out PPL "
          f"{first['heldout_ppl_teacher']:.2f}, general PPL {first.get('general_ppl_teacher', float('nan')):.2f}, "
          f"decode {first['decode_tok_s_teacher']:.1f} tok/s")
    print(f"{'student':<20}{'params':>8}{'ratio':>7}{'train s':>9}{'steps':>7}{'PPL held-out':>14}"
          f"{'retention':>11}{'agreement':>11}{'general PPL':>13}{'decode x':>10}")
    for label, (run, _) in results.items():
        s = run.summary
        print(f"{label:<20}{s['student_params_m']:>8}{s['params_ratio']:>7.3f}{s['train_s']:>9.0f}{s['steps']:>7}"
              f"{s['heldout_ppl_student']:>14.2f}{s['ppl_retention']:>11.1%}{s['agreement']:>11.1%}"
              f"{s.get('general_ppl_student', float('nan')):>13.2f}{s['decode_speedup']:>10.2f}")


if __name__ == "__main__":
    main()
