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
import time
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
from plain_og import load_model

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
    tokenizer = og.Tokenizer(model)
    template = Path(args.model, "chat_template.jinja")
    texts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()[:args.prompts]]
    prompts = []
    for text in texts:
        messages = json.dumps([{"role": "user", "content": text}])
        chat = tokenizer.apply_chat_template(messages, template_str=template.read_text(), add_generation_prompt=True)
        prompts.append(tokenizer.encode(chat))

    def decode_times(ids: list[int]) -> list[float]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + args.new_tokens, min_length=len(ids) + args.new_tokens,
                                  do_sample=False, batch_size=1)
        gen = og.Generator(model, params)
        gen.append_tokens(np.asarray([ids], dtype=np.int32))
        times = []
        while not gen.is_done() and len(times) < args.new_tokens:
            gen.generate_next_token()
            gen.get_next_tokens()
            times.append(time.perf_counter())
        return times

    decode_times(prompts[0])  # the warm-up call
    speeds = []
    for _ in range(args.reps):
        decoded, seconds = 0, 0.0
        for ids in prompts:
            times = decode_times(ids)
            decoded += len(times) - 1
            seconds += times[-1] - times[0]
        speeds.append(decoded / seconds)
    mean, std = statistics.mean(speeds), statistics.stdev(speeds)
    print(f"plain onnxruntime-genai {Path(args.model).name}: decode {mean:.1f} ± {std:.1f} tok/s "
          f"({args.reps} repetitions × {len(prompts)} prompts × {args.new_tokens} tokens, {args.threads} threads)")


if __name__ == "__main__":
    main()
