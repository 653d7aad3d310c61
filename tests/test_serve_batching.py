"""Continuous batching (engine/batch_decode.py): generations of one ONNX export decoded together, joining and leaving
between steps, each greedy reply the one it gets alone; through `engine serve` with the official client."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.batch_decode import MAX_ROWS, unsupported
from engine.configs import GenerationParams, QuantizeConfig
from tests.test_quantize import finished

PROMPTS = ["Name a colour.", "Tell me about Paris.", "Count to five.", "What is a CPU?", "Say hello.",
           "Write a haiku."]


@pytest.fixture
def int4_export(engine, tmp_path) -> str:
    """An int4 export of a tiny random Llama whose weights are scaled up (×8, norms aside), so that its greedy tokens
    depend on the context (the plain tiny model repeats one token whatever it is given: nothing to compare)."""
    from safetensors.numpy import load_file, save_file

    from tests.helpers import build_tiny_llama

    folder = build_tiny_llama(tmp_path / "lively")
    weights = load_file(folder / "model.safetensors")
    save_file({k: w if "norm" in k else w * 8 for k, w in weights.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    engine.add_model(str(folder), name="lively")
    finished(engine, engine.start_run(QuantizeConfig(model_id="lively", precision="int4", verify_tokens=0,
                                                     min_agreement=0, output_name="lively-int4")))
    return "lively-int4"


def test_sequences_join_and_leave_a_batch_with_the_tokens_they_get_alone(engine, int4_export):
    from engine.ort_genai import OgModel

    path = engine.get_model(int4_export).path
    alone, together = OgModel(path), OgModel(path)
    together.batch(4)
    assert together.batcher is not None, together.unbatched
    together.batcher.min_capacity = 8  # the KV rows grow (copying the running sequences') as longer ones join
    prompts = [alone.prompt_ids([{"role": "user", "content": p}]) for p in PROMPTS]
    lengths = [24, 9, 40, 17, 31, 12]  # they leave at different steps; six for four rows: two wait, then join
    expected = [[t for t, _ in alone.iter_tokens(p, n)] for p, n in zip(prompts, lengths)]
    assert len({t for e in expected for t in e}) > 20  # tokens that depend on the context

    def run(i: int) -> list[int]:
        return [t for t, _ in together.iter_tokens(prompts[i], lengths[i])]

    # the batch starts once all six wait (else a short one could end before the last of the first four joins)
    batcher, all_waiting = together.batcher, threading.Event()
    admit = batcher._admit
    batcher._admit = lambda: (all_waiting.wait(), admit())
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        futures = [pool.submit(run, i) for i in range(len(PROMPTS))]
        deadline = time.monotonic() + 60
        while batcher._waiting.qsize() < len(PROMPTS) and time.monotonic() < deadline:
            time.sleep(0.01)
        all_waiting.set()
        got = [f.result() for f in futures]
    batcher._admit = admit
    assert got == expected
    assert together.batcher.widest == 4  # never more rows than asked, and they did run together
    together.batch(64)
    assert together.batcher.max_batch == MAX_ROWS  # from 32 rows the head's float GEMM would change a row's logits

    # sampling: a seeded draw repeats itself, a stop ends a generation at once and frees its row
    hot = GenerationParams(temperature=0.9, top_p=0.8)
    draws = [[t for t, _ in together.iter_tokens(prompts[0], 20, hot, seed=7)] for _ in range(2)]
    assert draws[0] == draws[1]
    stop = threading.Event()
    stream = together.iter_tokens(prompts[1], 200, hot, stop)
    next(stream)
    stop.set()
    assert list(stream) == []
    assert [t for t, _ in together.iter_tokens(prompts[2], 40)] == expected[2]
    together.close()
    together.batcher._thread.join(timeout=30)
    assert not together.batcher._thread.is_alive()


def test_only_plain_decoder_graphs_are_batched():
    kv = {f"past_key_values.{i}.{k}": "tensor(float)" for i in range(2) for k in ("key", "value")}
    plain = {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)", **kv}
    assert unsupported(plain, 2) is None
    assert unsupported({**plain, "position_ids": "tensor(int64)"}, 2) is None
    assert "more inputs" in unsupported({**plain, "lora_A.0": "tensor(float16)"}, 2)  # adapter slots
    assert "lacks" in unsupported({k: v for k, v in plain.items() if k != "past_key_values.1.value"}, 2)
    assert "float32 nor float16" in unsupported({**plain, **{k: "tensor(int8)" for k in kv}}, 2)


def test_served_concurrent_requests_get_their_solo_replies(engine, int4_export):
    import openai

    from tests.test_serve import free_port

    question = [[{"role": "user", "content": p}] for p in PROMPTS[:4]]
    params = GenerationParams(temperature=0, max_new_tokens=16)
    alone = [list(engine.chat(int4_export, q, params))[-1].text for q in question]
    server = engine.start_server([int4_export], port=free_port(), max_concurrency=4)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="unused")

        def ask(i: int) -> str:
            stream = client.chat.completions.create(model=int4_export, stream=True, max_tokens=16, temperature=0,
                                                    messages=question[i])
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(ask, range(4)))
    finally:
        engine.stop_server(server.port)
    assert together == alone
    lm = engine._models.get(int4_export, engine.get_model(int4_export).path, None, "onnx-genai")[0]
    assert lm.batcher is not None and lm.batcher.widest >= 2
