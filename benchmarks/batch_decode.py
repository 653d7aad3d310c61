"""Can concurrent streams share decode steps on this CPU? Aggregate decode tokens/s of 1/2/4/8 greedy streams on an
onnxruntime-genai export, four ways, each against the streams run one at a time:

    python benchmarks/batch_decode.py --model MODEL_DIR [--new-tokens 64] [--threads 2]

- threads: one onnxruntime-genai Generator per stream, each in a thread of its own (what `engine serve` did before
  it batched);
- batched: engine/batch_decode.py, as `engine serve` now runs an export (one ONNX Runtime step for all streams,
  each prompt run alone first);
- static batch: one Generator with `batch_size` k over the k prompts left-padded with the pad token (the streams
  start together and step together);
- engine: `og.Engine` with k requests (onnxruntime-genai's scheduler; continuous batching proper needs a model
  with paged KV-cache layers, which our exports do not have).
Decode tokens/s counts the tokens after each stream's first (the prompt's cost is left out, as in the benchmark
job; for threads and batched, from the first stream's first token to the last stream's last, so later streams'
prompts count). "steps": the batched run's decode steps alone — the tokens they made over the time they took (the
prompts, each run alone while the others wait, left out as for the static batch). "same" counts the streams whose
greedy tokens, up to EOS, equal that prompt's solo run.
MODEL_DIR: e.g. the default int4 export `workspace/models/smollm2-135m-instruct-onnx-int4`.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how a bicycle works to a child.",
           "List five tips for writing clear emails and explain each.", "What is the capital of France?",
           "Name three colours and describe each.", "Write a haiku about the sea.", "Explain what a CPU does.",
           "Give me a recipe for pancakes."]


def until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i + 1]
    return tokens


def main() -> int:
    import onnxruntime_genai as og

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    config = og.Config(args.model)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads,
                                                                         "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    genai = json.loads(open(f"{args.model}/genai_config.json", encoding="utf-8").read())["model"]
    pad = int(genai.get("pad_token_id") or 0)
    eos = genai.get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos])
    new = args.new_tokens

    def ids(prompt: str) -> list[int]:
        text = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": prompt}]),
                                             add_generation_prompt=True)
        return [int(t) for t in tokenizer.encode(text)]

    def static(prompts: list[str]) -> tuple[list[list[int]], float]:
        rows = [ids(p) for p in prompts]
        width = max(map(len, rows))
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=width + new, do_sample=False, batch_size=len(rows))
        gen = og.Generator(model, params)
        gen.append_tokens(np.array([[pad] * (width - len(r)) + r for r in rows], dtype=np.int32))
        outs: list[list[int]] = [[] for _ in rows]
        t_first = None
        while not gen.is_done() and len(outs[0]) < new:
            gen.generate_next_token()
            for out, token in zip(outs, gen.get_next_tokens()):
                out.append(int(token))
            t_first = t_first or time.perf_counter()
        seconds = time.perf_counter() - t_first
        return outs, sum(len(until_eos(o, eos)) - 1 for o in outs) / seconds

    engine = og.Engine(model)

    def engine_run(prompts: list[str]) -> tuple[list[list[int]], float]:
        requests = []
        for p in prompts:
            request = engine.create_request()
            turn = og.TurnOptions(request)
            turn.set_do_sample(False)
            turn.set_max_generated_tokens(new)
            request.begin_turn(np.array(ids(p), dtype=np.int32), turn)
            requests.append(request)
        outs: list[list[int]] = [[] for _ in requests]
        buffer = engine.create_event_buffer(64)
        t_first = None
        while engine.has_pending_requests():
            for event in engine.run(buffer):
                if event.error_code != og.EngineErrorCode.NONE:
                    raise RuntimeError(f"engine error {event.error_code}")
                if event.token is not None and int(event.token) >= 0:  # a token of its request
                    outs[next(i for i, r in enumerate(requests) if r == event.request)].append(int(event.token))
                    t_first = t_first or time.perf_counter()
        seconds = time.perf_counter() - t_first
        for request in requests:
            request.close()
        return outs, sum(len(o) - 1 for o in outs) / seconds

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from engine.ort_genai import OgModel

    alone, together = OgModel(args.model, args.threads), OgModel(args.model, args.threads)
    together.batch(8)

    def concurrent(lm: OgModel):
        def run(prompts: list[str]) -> tuple[list[list[int]], float]:
            got: dict[int, list] = {}

            def one(i: int) -> None:
                got[i] = list(lm.iter_tokens(ids(prompts[i]), new))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            outs = [[token for token, _ in got[i]] for i in range(len(prompts))]
            seconds = max(got[i][-1][1] for i in got) - min(got[i][0][1] for i in got)
            return outs, sum(len(o) - 1 for o in outs) / seconds
        return run

    methods = {"threads": concurrent(alone), "batched": concurrent(together), "static": static, "engine": engine_run}
    solo, speeds = {}, []
    for p in PROMPTS:
        out, speed = static([p])
        solo[p] = until_eos(out[0], eos)
        speeds.append(speed)
    single = float(np.median(speeds))
    print(f"model {args.model}, {args.threads} threads, {new} new tokens, greedy")
    print(f"one stream at a time: median {single:.1f} decode tok/s over {len(PROMPTS)} prompts")
    print(f"{'streams':>8}" + "".join(f"{name + ' tok/s':>15}{'×':>6}{'same':>5}" for name in methods)
          + f"{'steps tok/s':>13}{'×':>6}")
    batcher = together.batcher
    for k in (1, 2, 4, 8):
        prompts = PROMPTS[:k]
        row = f"{k:>8}"
        for name, run in methods.items():
            before = (batcher.step_tokens, batcher.step_seconds)
            outs, speed = run(prompts)
            same = sum(until_eos(o, eos) == solo[p] for o, p in zip(outs, prompts))
            row += f"{speed:>15.1f}{speed / single:>6.2f}{f'{same}/{k}':>5}"
            if name == "batched":  # its decode steps alone: the tokens they made over their time (no prompts)
                steps = (batcher.step_tokens - before[0]) / (batcher.step_seconds - before[1])
        print(row + f"{steps:>13.1f}{steps / single:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
