"""How steady is this machine's decode speed? Greedy decoding with plain onnxruntime-genai for a while, nothing else
of SLMOps running, then the std/mean of the tokens/s of consecutive windows of 1, 2, 4, 8 and 16 seconds.

    python benchmarks/decode_drift.py MODEL_FOLDER [--seconds 96] [--threads 2]

A benchmark's std/mean over repetitions cannot be lower than what the machine itself gives at the repetition's
length: if the 16-second windows still differ by 5 %, repetitions of 1-2 s (the benchmark job's default workload)
will differ by more, whatever the benchmark does.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime_genai as og
from plain_og import decode_times, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=96)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    model = load_model(args.model, args.threads)
    ids = og.Tokenizer(model).encode("Tell me a long story about a cat who learns to sail.")
    gaps, ends = [], []  # seconds between consecutive tokens of one call, and when each gap ended
    t_end = time.perf_counter() + args.seconds
    while time.perf_counter() < t_end:
        times = decode_times(model, ids, 64)
        gaps.extend(np.diff(times))
        ends.extend(times[1:])
    gaps, ends = np.array(gaps), np.array(ends) - ends[0]
    print(f"{len(gaps)} decode steps in {ends[-1]:.0f} s, {1 / gaps.mean():.1f} tok/s overall, {args.threads} threads")
    for window in (1, 2, 4, 8, 16):
        bins = (ends // window).astype(int)
        rates = np.array([1 / gaps[bins == b].mean() for b in range(bins.max()) if (bins == b).any()])
        if len(rates) > 1:
            spread = rates.std(ddof=1) / rates.mean()
            print(f"windows of {window:2d} s: {len(rates):3d} windows, std/mean {spread:6.1%}, "
                  f"slowest {rates.min():.1f}, fastest {rates.max():.1f} tok/s")


if __name__ == "__main__":
    main()
