"""Decode speed of a distilled student against its teacher, same backend (transformers fp32), interleaved.

    python benchmarks/student_decode.py --home DIR --teacher NAME --student NAME [--rounds 5] [--threads 2]

Both models are loaded in this process and timed in turns (teacher, student, teacher, …) with the distill job's
own measure (`engine.distill.decode_tokens_per_s`: 48 greedy tokens one at a time through the KV cache after the
prompt, median of 3 after a warm-up), so a slow moment of the machine hits both. Prints each round and the
medians; the ratio is the student's decode speed × the teacher's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from engine import Engine, Settings
    from engine.distill import decode_tokens_per_s
    from engine.loading import load_causal_lm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(Settings(home=Path(args.home), offline=True))
    models = {name: load_causal_lm(engine.get_model(name).path) for name in (args.teacher, args.student)}
    speeds = {name: [] for name in models}
    for r in range(args.rounds):
        for name, (lm, tok) in models.items():
            speeds[name].append(decode_tokens_per_s(lm, tok))
        print(f"round {r + 1}: " + ", ".join(f"{n} {s[-1]:.1f} tok/s" for n, s in speeds.items()), flush=True)
    teacher, student = (statistics.median(speeds[n]) for n in (args.teacher, args.student))
    print(f"median: teacher {teacher:.1f} tok/s, student {student:.1f} tok/s, student × teacher "
          f"{student / teacher:.2f} ({args.threads} threads, torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
