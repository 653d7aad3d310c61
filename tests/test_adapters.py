"""Several LoRA adapters over one ONNX export: the base exported once with adapter inputs, each adapter a small ONNX
Runtime adapter file, chat and serve selecting BASE:ADAPTER (engine/onnx_adapters.py)."""
from pathlib import Path

import numpy as np
import pytest

from engine.configs import AddAdaptersConfig, QuantizeConfig
from engine.errors import InvalidInput, NotFound
from engine.records import ModelFormat
from tests.test_quantize import finished, on_q41_grid

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_adapter(engine, parent: str, folder: Path, name: str, targets: list[str], rank: int, seed: int,
                 scale: float = 0.05) -> str:
    """A PEFT LoRA adapter of `parent` with random B (so it changes the model), registered as an adapter model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.loading import load_causal_lm

    lm, tokenizer = load_causal_lm(engine.get_model(parent).path)
    lm = get_peft_model(lm, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0))
    torch.manual_seed(seed)
    with torch.no_grad():
        for pname, p in lm.named_parameters():
            if "lora_B" in pname:
                p.normal_(0.0, scale)
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # as a fine-tune saves it
    size = sum(f.stat().st_size for f in Path(folder).iterdir())
    engine.store.add_model(id=name, format=ModelFormat.ADAPTER.value, path=str(folder), source="run", source_ref="test",
                           status="ready", params=0, size_bytes=size, architecture="LlamaForCausalLM",
                           parent_id=parent, owned=False)
    return name


def hf_logits(engine, base: str, adapter: str | None, ids: list[int]) -> np.ndarray:
    import torch

    from engine.loading import load_causal_lm

    path = engine.get_model(adapter).path if adapter else None
    lm, _ = load_causal_lm(engine.get_model(base).path, path)
    with torch.inference_mode():
        return lm(torch.tensor([ids])).logits[0].numpy()


def test_two_adapters_over_one_int4_export_answer_like_their_transformers_adapters(tiny_engine, tmp_path):
    from engine.ort_genai import OgModel

    base = on_q41_grid(tiny_engine, tmp_path / "tiny-q41")  # the export's 4-bit weights are then the base's own
    a = lora_adapter(tiny_engine, base, tmp_path / "ad-a", "ad-a", ["q_proj", "v_proj"], 4, seed=1)
    b = lora_adapter(tiny_engine, base, tmp_path / "ad-b", "ad-b", ALL, 8, seed=2)
    run = finished(tiny_engine, tiny_engine.start_run(QuantizeConfig(
        model_id=base, adapters=[a, b], verify_tokens=0, adapter_examples=6, output_name="tiny-multi")))
    rows = {r["adapter"]: r for r in run.summary["adapters"]}
    assert set(rows) == {a, b} and all(r["greedy_agreement"] >= 0.95 and r["tokens"] > 0 for r in rows.values())
    export = tiny_engine.get_model("tiny-multi")
    assert sorted(p.name for p in (Path(export.path) / "adapters").iterdir()) == [f"{a}.onnx_adapter",
                                                                                 f"{b}.onnx_adapter"]
    # each adapter's change to the logits is the transformers adapter's, to int8-activation precision
    og = OgModel(export.path)
    ids = og.prompt_ids([{"role": "user", "content": "What is the capital of France?"}])
    base_ort, base_hf = og.logits(ids), hf_logits(tiny_engine, base, None, ids)
    for name in (a, b):
        effect_ort = og.with_adapter(name).logits(ids) - base_ort
        effect_hf = hf_logits(tiny_engine, base, name, ids) - base_hf
        assert np.abs(effect_hf).max() > 0.05  # the adapter does change the model
        assert np.abs(effect_ort - effect_hf).max() < 0.1 * np.abs(effect_hf).max(), name
    assert np.array_equal(og.logits(ids), base_ort)  # views leave the base as it was

    # chat and serve address an adapter as BASE:ADAPTER; an unknown one is refused with the known ones listed
    reply = list(tiny_engine.chat(f"tiny-multi:{a}", [{"role": "user", "content": "hi"}]))[-1]
    assert reply.done and reply.new_tokens > 0
    assert tiny_engine.serve_refs(["tiny-multi"], [a, b]) == ["tiny-multi", f"tiny-multi:{a}", f"tiny-multi:{b}"]
    served_answers_each_adapter_at_once(tiny_engine, "tiny-multi", [a, b])

    # a third adapter joins the export later: only it is converted and checked; the base stays as it was
    c = lora_adapter(tiny_engine, base, tmp_path / "ad-c", "ad-c", ["o_proj", "down_proj"], 4, seed=3)
    weights = (Path(export.path) / "model.onnx.data").stat().st_mtime_ns
    added = finished(tiny_engine, tiny_engine.start_run(AddAdaptersConfig(model_id="tiny-multi", adapters=[c],
                                                                          adapter_examples=4)))
    assert [r["adapter"] for r in added.summary["adapters"]] == [c] and added.summary["adapters"][0][
        "greedy_agreement"] >= 0.95
    assert tiny_engine.adapters_of("tiny-multi") == [a, b, c]
    assert (Path(export.path) / "model.onnx.data").stat().st_mtime_ns == weights
    assert tiny_engine.get_model("tiny-multi").size_bytes > export.size_bytes
    assert list(tiny_engine.chat(f"tiny-multi:{c}", [{"role": "user", "content": "hi"}]))[-1].done
    with pytest.raises(InvalidInput, match="already"):
        tiny_engine.start_run(AddAdaptersConfig(model_id="tiny-multi", adapters=[a]))
    with pytest.raises(NotFound, match=f"tiny-multi:{a}"):
        tiny_engine.resolve("tiny-multi:nope")
    with pytest.raises(NotFound, match="has none"):
        tiny_engine.resolve(f"{base}:{a}")


def test_adapters_that_do_not_fit_the_export_are_refused_before_a_run(tiny_engine, tmp_path):
    base = on_q41_grid(tiny_engine, tmp_path / "tiny-q41")
    own = lora_adapter(tiny_engine, base, tmp_path / "own", "own", ["q_proj"], 4, seed=1)
    other = lora_adapter(tiny_engine, "tiny", tmp_path / "other", "other", ["q_proj"], 4, seed=1)
    head = lora_adapter(tiny_engine, base, tmp_path / "head", "head", ["q_proj", "lm_head"], 4, seed=1)
    before = len(tiny_engine.list_runs(limit=None))
    cases = [(dict(adapters=[other]), "trained on 'tiny'"), (dict(adapters=[head]), "lm_head"),
             (dict(adapters=[own, own]), "twice"), (dict(adapters=[base]), "not a LoRA adapter"),
             (dict(adapters=[own], precision="int8"), "affine int4")]
    plain = finished(tiny_engine, tiny_engine.start_run(QuantizeConfig(model_id=base, verify_tokens=0,
                                                                       output_name="plain")))
    assert plain.status.value == "succeeded"
    with pytest.raises(InvalidInput, match="without adapter slots"):
        tiny_engine.start_run(AddAdaptersConfig(model_id="plain", adapters=[own]))
    before = len(tiny_engine.list_runs(limit=None))
    for fields, words in cases:
        with pytest.raises(InvalidInput, match=words):
            tiny_engine.start_run(QuantizeConfig(model_id=base, **fields))
    assert len(tiny_engine.list_runs(limit=None)) == before  # nothing started, nothing stored


def served_answers_each_adapter_at_once(engine, export: str, adapters: list[str]) -> None:
    """The OpenAI API over one loaded base: /v1/models lists each BASE:ADAPTER; requests alternating adapters, six
    at once, each get the reply their own adapter gives alone (no request sees another's adapter)."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from tests.test_serve import free_port

    refs = engine.serve_refs([export], adapters)
    server = engine.start_server(refs, port=free_port(), max_concurrency=6)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        assert [m.id for m in client.models.list()] == refs

        def ask(ref: str) -> str:
            reply = client.chat.completions.create(model=ref, temperature=0, max_tokens=12,
                                                   messages=[{"role": "user", "content": "Name a colour."}])
            return reply.choices[0].message.content

        alone = {ref: ask(ref) for ref in refs}
        assert len(set(alone.values())) > 1  # the adapters answer differently
        order = [refs[1 + i % len(adapters)] for i in range(6)] + [export]
        with ThreadPoolExecutor(len(order)) as pool:
            together = list(pool.map(ask, order))
        assert together == [alone[ref] for ref in order]
        with pytest.raises(openai.NotFoundError):
            ask(f"{export}:nope")
    finally:
        engine.stop_server(server.port)


def test_the_portable_graph_carries_adapters_too(tiny_engine, tmp_path):
    """Without the fused kernel the adapter inputs feed ONNX Runtime MatMuls (cast from float16); slots of
    different ranks (a q/v adapter leaves the MLP slots empty) run side by side."""
    base = on_q41_grid(tiny_engine, tmp_path / "tiny-q41")
    a = lora_adapter(tiny_engine, base, tmp_path / "ad-a", "ad-a", ["q_proj", "v_proj"], 4, seed=1)
    run = finished(tiny_engine, tiny_engine.start_run(QuantizeConfig(
        model_id=base, adapters=[a], kernel="portable", verify_tokens=0, adapter_examples=4, output_name="port")))
    assert run.summary["adapters"][0]["greedy_agreement"] >= 0.95
    assert list(tiny_engine.chat(f"port:{a}", [{"role": "user", "content": "hi"}]))[-1].done
