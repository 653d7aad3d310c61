"""Job `selftest`: load a model and answer a few prompts greedily, recording load time and decode speed."""
from __future__ import annotations

import statistics
import time

from ..chat import stream_reply
from ..loading import load_causal_lm
from ..configs import GenerationParams, SelfTestConfig

CONFIG = SelfTestConfig


def run(ctx, config: SelfTestConfig) -> None:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    model = ctx.store.get_model(config.model_id)
    ctx.progress(0.02, f"loading {model.id}")
    t0 = time.perf_counter()
    lm, tokenizer = load_causal_lm(model.path)
    load_s = time.perf_counter() - t0
    ctx.metric("load_s", load_s)
    ctx.log(f"loaded {model.id} in {load_s:.2f} s")
    params = GenerationParams(temperature=0.0, max_new_tokens=config.max_new_tokens)
    speeds = []
    for i, prompt in enumerate(config.prompts):
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.95 * i / len(config.prompts), f"prompt {i + 1}/{len(config.prompts)}")
        *_, last = stream_reply(lm, tokenizer, [{"role": "user", "content": prompt}], params, ctx.cancel_event)
        ctx.check_cancelled()
        ctx.log(f"Q: {prompt}\nA: {last.text.strip()}")
        ctx.metric("new_tokens", last.new_tokens, step=i)
        if last.seconds_to_first_token is not None:
            ctx.metric("ttft_s", last.seconds_to_first_token, step=i)
        if last.tokens_per_s:
            ctx.metric("decode_tok_s", last.tokens_per_s, step=i)
            speeds.append(last.tokens_per_s)
    summary = {"load_s": round(load_s, 2)}
    if speeds:
        summary["decode_tok_s"] = round(statistics.mean(speeds), 1)
    ctx.summary(**summary)
