"""An independent check of the benchmark job's decode speed: plain onnxruntime-genai, no SLMOps code at all.

    python benchmarks/og_plain_decode.py MODEL_FOLDER [--reps 5] [--new-tokens 64] [--threads 2] [--prompts 2]

Same workload as the benchmark job's defaults (the first prompts of assets/prompts/seed_prompts.heldout.jsonl,
chat template, greedy, exactly --new-tokens tokens per call, 1 untimed warm-up call); decode tok/s of a
repetition = tokens after the first ÷ seconds after the first token, summed over the prompt set. Run it right
after `python -m engine benchmark --model NAME` in the same session and compare the two numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from plain_og import chat_prompts, decode_speed, decode_times, load_model

PROMPTS = Path(__file__).resolve().parent.parent / "assets" / "prompts" / "seed_prompts.heldout.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=2)
    args = ap.parse_args()

    model = load_model(args.model, args.threads)
    texts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()[:args.prompts]]
    prompts = chat_prompts(model, args.model, texts)
    decode_times(model, prompts[0], args.new_tokens)  # the warm-up call
    speeds = [decode_speed(model, prompts, args.new_tokens) for _ in range(args.reps)]
    mean, std = statistics.mean(speeds), statistics.stdev(speeds)
    print(f"plain onnxruntime-genai {Path(args.model).name}: decode {mean:.1f} ± {std:.1f} tok/s "
          f"({args.reps} repetitions × {len(prompts)} prompts × {args.new_tokens} tokens, {args.threads} threads)")


if __name__ == "__main__":
    main()
