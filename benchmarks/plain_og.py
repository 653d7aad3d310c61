"""Shared by the benchmark scripts that must not use SLMOps code: an export loaded by plain onnxruntime-genai, its
chat prompts, and one greedy call timed token by token."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime_genai as og


def load_model(folder: str, threads: int):
    """og.Model of `folder` with `threads` intra-op threads (one inter-op thread), as the benchmark job runs it."""
    config = og.Config(folder)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    return og.Model(config)


def chat_prompts(model, folder: str, texts: list[str]) -> list[list[int]]:
    """Each text as a user turn through the export's chat template, ready for the reply."""
    tokenizer = og.Tokenizer(model)
    template = Path(folder, "chat_template.jinja").read_text()
    return [tokenizer.encode(tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": text}]),
                                                           template_str=template, add_generation_prompt=True))
            for text in texts]


def decode_times(model, ids: list[int], n: int) -> list[float]:
    """One greedy call after `ids` of exactly n tokens (EOS not allowed earlier): each token's arrival time."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False, batch_size=1)
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray([ids], dtype=np.int32))
    times = []
    while not gen.is_done() and len(times) < n:
        gen.generate_next_token()
        gen.get_next_tokens()
        times.append(time.perf_counter())
    return times


def decode_speed(model, prompts: list[list[int]], n: int) -> float:
    """Decode tok/s over one greedy call per prompt: the tokens after each call's first ÷ the seconds after it."""
    decoded, seconds = 0, 0.0
    for ids in prompts:
        times = decode_times(model, ids, n)
        decoded += len(times) - 1
        seconds += times[-1] - times[0]
    return decoded / seconds
