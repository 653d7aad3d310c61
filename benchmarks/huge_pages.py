"""Decode speed of an int4 export with the kernels' weights in 2 MiB pages (the default) and without
(SLMOPS_HUGE_PAGES=0): one process per measurement, the two settings alternating, so both see the same machine.

    python benchmarks/huge_pages.py MODEL_FOLDER [--rounds 8] [--new-tokens 128]

Each process loads the export with plain onnxruntime-genai (2 threads), decodes 3 chat prompts × --new-tokens greedy
tokens after an untimed warm-up and prints its decode tok/s (tokens after the first ÷ their time) and how much of
its memory is in transparent huge pages. Medians with 95 % intervals (engine.stats).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PROMPTS = ["What is the capital of France?", "Write a short story about a robot.", "Explain photosynthesis."]


def measure(folder: str, new_tokens: int) -> None:
    """One process's figure: decode tok/s and the kB of its memory in huge pages."""
    from plain_og import chat_prompts, decode_speed, decode_times, load_model

    model = load_model(folder, 2)
    prompts = chat_prompts(model, folder, PROMPTS)
    decode_times(model, prompts[0], 16)  # the warm-up call
    speed = decode_speed(model, prompts, new_tokens)
    smaps = Path(f"/proc/{os.getpid()}/smaps").read_text().splitlines()
    print(speed, sum(int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages:")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: measure once
    args = ap.parse_args()
    if args.one:
        return measure(args.model, args.new_tokens)
    from engine.stats import median_interval, within_noise

    speeds: dict[str, list[float]] = {"1": [], "0": []}
    huge: dict[str, int] = {}
    for _ in range(args.rounds):
        for setting in speeds:
            out = subprocess.run([sys.executable, __file__, args.model, "--one", "--new-tokens", str(args.new_tokens)],
                                 env={**os.environ, "SLMOPS_HUGE_PAGES": setting}, capture_output=True, text=True,
                                 check=True).stdout.split()
            speeds[setting].append(float(out[0]))
            huge[setting] = int(out[1])
    on, off = median_interval(speeds["1"]), median_interval(speeds["0"])
    print(f"{Path(args.model).name}: {args.rounds} alternating rounds × 3 prompts × {args.new_tokens} tokens, "
          "2 threads")
    for label, setting, m in (("weights in 2 MiB pages", "1", on), ("SLMOPS_HUGE_PAGES=0", "0", off)):
        print(f"  {label:24s} decode {m[0]:6.1f} tok/s (95 % CI {m[1]:.1f}–{m[2]:.1f}), "
              f"{huge[setting] / 1024:.0f} MiB in huge pages")
    print(f"  ratio {on[0] / off[0]:.3f}" + (" (within noise)" if within_noise(on, off) else ""))


if __name__ == "__main__":
    main()
