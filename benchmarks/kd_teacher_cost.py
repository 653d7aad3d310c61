"""How much of a KD step is the teacher's forward pass? Decides between teacher logits on the fly and a cached
(top-k) pass: caching saves at most the teacher forward of every epoch after the first, and costs one pass to fill.

Usage: .venv/bin/python benchmarks/kd_teacher_cost.py [--home DIR] [--keep 10] [--batch 8] [--length 160]
Times, on the bundled teacher and a derived student, the student's forward+backward and the teacher's forward on
the same batch (median of 8 after 2 warm-ups), then prints the step-time ratio caching would reach at 1-4 epochs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_time(fn, repeats: int = 8, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--keep", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=160)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from engine import DEFAULT_MODEL_ID, DistillConfig, Engine, Settings
    from engine.distill import derive_student

    engine = Engine(Settings(home=args.home or Path(tempfile.mkdtemp(prefix="slmops-kd-")) / "ws", offline=True))
    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id)
    teacher = AutoModelForCausalLM.from_pretrained(engine.get_model(DEFAULT_MODEL_ID).path).eval()
    layers = DistillConfig(teacher_model_id="t", train_path="x", keep_layers=args.keep).layer_indices(
        teacher.config.num_hidden_layers)
    student = derive_student(teacher, layers).train()
    ids = torch.randint(0, teacher.config.vocab_size, (args.batch, args.length))

    def student_step():
        student(input_ids=ids, labels=ids).loss.backward()

    def teacher_forward():
        with torch.no_grad():
            teacher(input_ids=ids)

    s, t = median_time(student_step), median_time(teacher_forward)
    print(f"batch {args.batch} x {args.length} tokens, student keeps {len(layers)} of "
          f"{teacher.config.num_hidden_layers} layers")
    print(f"student forward+backward: {s:.3f} s   teacher forward: {t:.3f} s   teacher share of a KD step: "
          f"{t / (s + t):.1%}")
    for epochs in (1, 2, 3, 4):
        on_the_fly = epochs * (s + t)
        cached = t + epochs * s  # one teacher pass fills the cache; reading top-k logits back is taken as free
        print(f"{epochs} epoch(s): cached / on-the-fly time = {cached / on_the_fly:.3f}")


if __name__ == "__main__":
    main()
