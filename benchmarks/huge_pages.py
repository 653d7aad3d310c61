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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PROMPTS = ["What is the capital of France?", "Write a short story about a robot.", "Explain photosynthesis."]


def measure(folder: str, new_tokens: int) -> None:
    """One process's figure: decode tok/s and the kB of its memory in huge pages."""
    import json

    import numpy as np
    import onnxruntime_genai as og
    from plain_og import load_model

    model = load_model(folder, 2)
    tok = og.Tokenizer(model)
    template = Path(folder, "chat_template.jinja").read_text()
    prompts = [tok.encode(tok.apply_chat_template(json.dumps([{"role": "user", "content": p}]), template_str=template,
                                                  add_generation_prompt=True)) for p in PROMPTS]

    def run(ids: list[int], n: int) -> tuple[int, float]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False, batch_size=1)
        gen = og.Generator(model, params)
        gen.append_tokens(np.asarray([ids], dtype=np.int32))
        times = []
        while not gen.is_done():
            gen.generate_next_token()
            times.append(time.perf_counter())
        return len(times) - 1, times[-1] - times[0]

    run(prompts[0], 16)
    done = [run(p, new_tokens) for p in prompts]
    smaps = Path(f"/proc/{os.getpid()}/smaps").read_text().splitlines()
    huge = sum(int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages:"))
    print(sum(n for n, _ in done) / sum(s for _, s in done), huge)


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
