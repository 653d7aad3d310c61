"""Quantize job: ONNX Runtime GenAI exports of a tiny random Llama and of the bundled SmolLM2, verified against
torch; refusals (block size, architecture) before a run starts; cancel kills the builder mid-build."""
import json
import time
from pathlib import Path

import numpy as np
import pytest

from engine.configs import GenerationParams, QuantizeConfig
from engine.errors import InvalidInput, UnsupportedModel


def finished(engine, run_id, timeout=600):
    run = engine.wait_run(run_id, timeout=timeout)
    assert run.status.value == "succeeded", (run.error, [line.message for line in engine.run_logs(run_id)][-15:])
    return run


def metrics(engine, run_id) -> dict:
    return {m.name: m.value for m in engine.run_metrics(run_id)}


def test_tiny_exports_fp32_matches_torch_and_int4_builds(tiny_engine):
    import torch

    from engine.loading import load_causal_lm
    from engine.ort_genai import OgModel

    run_fp32 = tiny_engine.start_run(QuantizeConfig(model_id="tiny", precision="fp32", verify_tokens=256))
    finished(tiny_engine, run_fp32)
    export = tiny_engine.get_model("tiny-onnx-fp32")
    assert export.format == "onnx-genai" and export.parent_id == "tiny" and export.run_id == run_fp32
    m = metrics(tiny_engine, run_fp32)
    assert m["first_token_agreement"] == 1.0
    assert abs(m["ppl_ratio"] - 1.0) < 1e-3

    lm, tok = load_causal_lm(tiny_engine.get_model("tiny").path)
    og_model = OgModel(export.path)
    ids = tok("The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        ref = lm(input_ids=torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(og_model.logits(ids), ref, atol=1e-3, rtol=1e-3)

    for method in ("affine", "builder", "olive"):
        run_id = tiny_engine.start_run(QuantizeConfig(model_id="tiny", precision="int4", method=method,
                                                      verify_tokens=256))
        finished(tiny_engine, run_id)
        m = metrics(tiny_engine, run_id)
        assert np.isfinite(m["ppl_ratio"]) and m["size_mb"] > 0
    affine = tiny_engine.get_model("tiny-onnx-int4")
    assert affine.size_bytes < export.size_bytes

    # distillation stage 1 uses the teacher's fastest verified export (fp32 and affine int4 pass the ×1.05 bound)
    from engine import GenerateDataConfig

    gen_id = tiny_engine.start_run(GenerateDataConfig(teacher_model_id="tiny", max_prompts=3, max_new_tokens=8,
                                                      drop_truncated=False, min_chars=0))
    gen = finished(tiny_engine, gen_id)
    assert gen.summary["backend"].startswith("onnxruntime-genai (tiny-onnx-")
    assert gen.summary["generated"] == 3 and gen.summary["teacher_tokens_per_s"] > 0

    # an ONNX export chats like any other model
    *_, last = tiny_engine.chat("tiny-onnx-int4", [{"role": "user", "content": "Hello"}],
                                GenerationParams(temperature=0.0, max_new_tokens=8))
    assert last.done and last.new_tokens >= 1 and last.prompt_tokens > 0


def test_block_size_that_does_not_divide_widths_is_refused(tiny_engine):
    with pytest.raises(InvalidInput, match="does not divide"):
        tiny_engine.start_run(QuantizeConfig(model_id="tiny", block_size=128))
    assert tiny_engine.list_runs() == []


def test_unsupported_architecture_is_refused(engine, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.helpers import build_tokenizer

    folder = tmp_path / "gpt2"
    tok = build_tokenizer()
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    tok.save_pretrained(folder)
    engine.add_model(str(folder), name="gpt2-tiny")
    with pytest.raises(UnsupportedModel, match="GPT2LMHeadModel is not supported"):
        engine.start_run(QuantizeConfig(model_id="gpt2-tiny"))


def test_cancel_mid_build_kills_the_builder(tiny_engine):
    import psutil

    run_id = tiny_engine.start_run(QuantizeConfig(model_id="tiny", precision="fp32"))
    deadline = time.monotonic() + 120
    builder = None
    while time.monotonic() < deadline and builder is None:
        run = tiny_engine.get_run(run_id)
        assert not run.status.final, run.error
        for proc in psutil.process_iter(["cmdline"]):
            if "onnxruntime_genai.models.builder" in " ".join(proc.info["cmdline"] or []) and \
                    str(tiny_engine.settings.home) in " ".join(proc.info["cmdline"]):
                builder = proc
        time.sleep(0.05)
    assert builder is not None, "the builder never started"
    tiny_engine.cancel_run(run_id)
    run = tiny_engine.wait_run(run_id, timeout=60)
    assert run.status.value == "cancelled"
    builder.wait(timeout=10)  # the child is gone, not orphaned
    assert not tiny_engine.store.has_model("tiny-onnx-fp32")


@pytest.mark.real
def test_bundled_model_int4_export_loads_and_answers(real_engine):
    run_id = real_engine.start_run(QuantizeConfig(model_id="smollm2-135m-instruct", output_name="smollm2-int4-ci",
                                                  verify_tokens=1024))
    finished(real_engine, run_id, timeout=900)
    m = metrics(real_engine, run_id)
    run = real_engine.get_run(run_id)
    assert run.summary["size_ratio"] < 0.25
    assert m["ppl_ratio"] < 1.02  # affine int4 keeps the Q4_1 weights exactly
    assert m["grid_exact_share"] > 0.99
    assert m["first_token_agreement"] >= 0.8
    from engine.kernels import cpu_supported

    if cpu_supported() is None:  # the fused kernels: Q4_1 weights exact, prompts at ~16-bit activations
        assert m["fused_kernel"] == 1.0 and m["ppl_ratio"] < 1.002
        assert "Paris" in run.summary["answer"]
    *_, last = real_engine.chat("smollm2-int4-ci", [{"role": "user", "content": "Name a colour."}],
                                GenerationParams(temperature=0.0, max_new_tokens=12))
    assert last.text.strip() and last.tokens_per_s
    # a Foundry Local model folder: genai_config.json, the ONNX files and inference_model.json naming the model
    folder = Path(real_engine.get_model("smollm2-int4-ci").path)
    foundry = json.loads((folder / "inference_model.json").read_text())
    assert foundry["Name"] == "smollm2-int4-ci" and (folder / "genai_config.json").is_file()
    assert "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant\n" in foundry["PromptTemplate"]["prompt"]


def test_sweep_registers_the_best_and_keeps_the_others_registrable(tiny_engine):
    from engine import QuantizeSweepConfig

    run_id = tiny_engine.start_run(QuantizeSweepConfig(model_id="tiny", candidates=["int4", "fp32"],
                                                       verify_tokens=128, max_ppl_ratio=10.0))
    run = finished(tiny_engine, run_id)
    rows = {r["variant"]: r for r in run.summary["candidates"]}
    assert set(rows) == {"int4", "fp32"} and all(r["size_mb"] > 0 and r["decode_tok_s"] > 0 for r in rows.values())
    chosen = run.summary["chosen"]
    assert tiny_engine.get_model(run.summary["output"]).format == "onnx-genai"
    other = ({"int4", "fp32"} - {chosen}).pop()
    record = tiny_engine.register_candidate(run_id, other, "tiny-other")
    assert record.parent_id == "tiny" and record.run_id == run_id
    assert tiny_engine.lineage("tiny")["children"][0]["id"] in {"tiny-other", run.summary["output"]}
    with pytest.raises(InvalidInput, match="no candidate"):
        tiny_engine.register_candidate(run_id, other, "again")


def on_q41_grid(engine, folder) -> str:
    """'tiny' with every linear layer's weights moved onto a Q4_1 grid (blocks of 32 along the input), registered as
    'tiny-q41': a stand-in for the bundled model, whose weights come from a Q4_1 GGUF."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from engine.block_quant import round_affine_4bit

    shutil.copytree(engine.get_model("tiny").path, folder)
    weights = load_file(f"{folder}/model.safetensors")
    for name, w in weights.items():
        if name.endswith("proj.weight"):  # [out, in]
            weights[name] = np.ascontiguousarray(round_affine_4bit(w.T, 32).T.astype(np.float32))
    save_file(weights, f"{folder}/model.safetensors", metadata={"format": "pt"})
    return engine.add_model(str(folder), name="tiny-q41").id


def lora_child(engine, parent: str, folder, rank: int = 4, scale: float = 0.02, seed: int = 1) -> str:
    """A merged LoRA fine-tune of `parent` (random B, so the update is not zero), registered as its child."""
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.loading import load_causal_lm
    from engine.models import inspect_hf_folder

    lm, tok = load_causal_lm(engine.get_model(parent).path)
    lm = get_peft_model(lm, LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    lm.merge_and_unload().save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    facts = inspect_hf_folder(folder)
    engine.store.add_model(id=f"{parent}-ft", format="hf", path=str(folder), source="run", source_ref="test",
                           status="ready", params=facts["params"], size_bytes=facts["size_bytes"],
                           architecture=facts["architecture"], parent_id=parent, owned=False)
    return f"{parent}-ft"


def initializers(export_dir) -> dict:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(export_dir) + "/model.onnx", load_external_data=True).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def test_int4_of_a_lora_fine_tune_keeps_the_parents_codes_and_the_whole_update(tiny_engine, tmp_path):
    """On a parent whose weights lie on a Q4_1 grid (as the bundled model's do), rounding the merged weights keeps
    little of a small LoRA update; the default export keeps the parent's 4-bit codes and the whole update."""
    from safetensors.numpy import load_file

    parent = on_q41_grid(tiny_engine, tmp_path / "tiny-q41")
    child = lora_child(tiny_engine, parent, tmp_path / "tiny-ft", rank=4, scale=0.004)
    parent_run = tiny_engine.start_run(QuantizeConfig(model_id=parent, verify_tokens=0))
    child_run = tiny_engine.start_run(QuantizeConfig(model_id=child, verify_tokens=128))
    finished(tiny_engine, parent_run), finished(tiny_engine, child_run)
    assert metrics(tiny_engine, parent_run)["grid_exact_share"] == 1.0
    m = metrics(tiny_engine, child_run)
    assert m["low_rank_deltas"] >= 2 and m["eight_bit_deltas"] == 0  # q and v of 2 layers (q/k/v may be packed)
    assert m["rounding_keeps"] < 0.5  # what the export would have kept by rounding the merged weights
    assert m["grid_exact_share"] == 1.0  # the parent's weights, exactly
    ours = initializers(tiny_engine.get_model(f"{parent}-onnx-int4").path)
    ft = initializers(tiny_engine.get_model(f"{child}-onnx-int4").path)
    codes = [n for n in ours if n.endswith(("_Q41", "_Q4"))]
    assert codes and all(np.array_equal(ours[n], ft[n]) for n in codes)  # the 4-bit part is the parent's
    pairs = [(ft[n], ft[n[:-1] + "B"]) for n in ft if n.endswith("_delta_A")]
    assert len(pairs) == m["low_rank_deltas"] and all(a.shape[1] <= 8 for a, _ in pairs)  # rank 4 (8 when packed)
    # the update in the export is the whole update, to float precision
    w_ft = load_file(f"{tmp_path}/tiny-ft/model.safetensors")
    w_parent = load_file(f"{tmp_path}/tiny-q41/model.safetensors")
    energy = sum(float(((w_ft[k] - w_parent[k]).astype(np.float64) ** 2).sum()) for k in w_ft)
    kept = sum(float(((a.astype(np.float64) @ b) ** 2).sum()) for a, b in pairs)
    assert energy > 0 and abs(kept - energy) < 1e-4 * energy

    off = tiny_engine.start_run(QuantizeConfig(model_id=child, fine_tune_delta="off", verify_tokens=0,
                                               output_name="tiny-ft-off"))
    finished(tiny_engine, off)
    assert metrics(tiny_engine, off)["low_rank_deltas"] == 0


def test_verify_refuses_an_export_that_no_longer_answers_like_its_source(tmp_path):
    from engine.errors import VerificationFailed
    from engine.export_verify import check_agreement

    check_agreement({"first_token_agreement": 0.75}, 0.75, tmp_path)  # at the bound: kept
    with pytest.raises(VerificationFailed, match=r"only 31% of the check prompts .*×0\.900.*not registered"):
        check_agreement({"first_token_agreement": 5 / 16, "ppl_ratio": 0.9}, 0.75, tmp_path)


def test_low_rank_factors_an_update_exactly_and_refuses_a_full_rank_one():
    from engine.onnx_delta import low_rank

    rng = np.random.default_rng(0)
    d = rng.standard_normal((96, 8)) @ rng.standard_normal((8, 160)) * 1e-3
    a, b = low_rank(d)
    assert a.shape == (96, 8) and b.shape == (8, 160)
    np.testing.assert_allclose(a @ b, d, atol=1e-9)
    assert low_rank(rng.standard_normal((96, 160))) is None


def test_verify_on_a_task_scores_the_export_and_its_source(tiny_engine):
    """With a task, verify scores the source (transformers) and the export (onnxruntime-genai) on it: the fp32
    export answers as its source does, keeps the whole score and is registered."""
    run = finished(tiny_engine, tiny_engine.start_run(QuantizeConfig(model_id="tiny", precision="fp32", verify_tokens=0,
                                                                     task="ticket_label", task_limit=4)))
    s = run.summary
    assert s["task"] == "ticket_label" and s["task_score_source"] == s["task_score_export"]
    assert s["task_retention"] == 1.0 and tiny_engine.store.has_model("tiny-onnx-fp32")
    logs = [line.message for line in tiny_engine.run_logs(run.id)]
    assert any(m.startswith("verify: export on ticket_label:") for m in logs)


def test_verify_refuses_an_export_that_lost_the_task(tmp_path):
    """The case that started this check: a LoRA fine-tune at 99/100 whose int4 export scored 10/100."""
    from engine.errors import VerificationFailed
    from engine.export_verify import check_task_kept

    check_task_kept("t", 0.88, 0.88 * 0.95, 0.95, tmp_path)  # at the bound: kept
    check_task_kept("t", 0.0, 0.0, 0.95, tmp_path)  # a source that cannot do the task: nothing to lose
    with pytest.raises(VerificationFailed, match=r"lost the task.*0\.100 on 't'.*0\.990 \(10% kept.*not registered"):
        check_task_kept("t", 0.99, 0.10, 0.95, tmp_path)
