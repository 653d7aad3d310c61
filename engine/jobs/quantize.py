"""Job `quantize`: build an ONNX Runtime GenAI export of a registered model, quantize it, register it with lineage,
and verify it against its source (answer, first-token agreement, perplexity on the standard text, decode speed).

Stages: load (merge an adapter) → convert (model builder) → quantize (affine int4) → write (register) → verify.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from ..configs import QuantizeConfig
from ..onnx_export import builder_command, check_disk, check_export, export_size, run_builder
from ..records import ModelStatus
from ..settings import PROJECT_ROOT

CONFIG = QuantizeConfig
CHECK_PROMPT = "What is the capital of France?"
AGREEMENT_PROMPTS = PROJECT_ROOT / "assets" / "prompts" / "seed_prompts.heldout.jsonl"


def agreement_prompts(limit: int = 16) -> list[str]:
    rows = [json.loads(line) for line in AGREEMENT_PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [CHECK_PROMPT] + [r["prompt"] for r in rows[:limit - 1]]


def merged_source(ctx, model) -> Path:
    """The HF folder to export: the model itself, or its adapter merged into the base in the run folder."""
    if model.format == "hf":
        return Path(model.path)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ctx.store.get_model(model.parent_id)
    ctx.log(f"merging LoRA adapter '{model.id}' into its base '{base.id}' before export")
    lm = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, use_safetensors=True)
    lm = PeftModel.from_pretrained(lm, model.path).merge_and_unload()
    out = ctx.workdir / "merged"
    lm.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model.path).save_pretrained(out)
    return out


def run(ctx, config: QuantizeConfig) -> None:
    source = ctx.store.get_model(config.model_id)
    out_id = config.output_id()
    if ctx.store.has_model(out_id):
        raise ValueError(f"a model named '{out_id}' already exists; choose another output name")
    t0 = time.perf_counter()
    ctx.progress(0.02, "load: preparing the source model")
    src = merged_source(ctx, source)
    facts = check_export(src, config, source.params)
    check_disk(ctx.settings.models_dir, facts["bytes_needed"])
    ctx.check_cancelled()

    affine = config.precision == "int4" and config.method == "affine"
    build_precision = "fp32" if affine else config.precision
    build_dir = ctx.workdir / f"build-{build_precision}"
    shutil.rmtree(build_dir, ignore_errors=True)
    ctx.progress(0.08, f"convert: ONNX Runtime GenAI builder ({build_precision})")
    run_builder(builder_command(src, build_dir, build_precision, config, ctx.settings.cache_dir / "onnx-builder"),
                ctx.workdir, ctx.log, ctx.check_cancelled)
    ctx.metric("build_s", time.perf_counter() - t0)

    result_dir = build_dir
    if affine:
        from ..onnx_affine import rewrite

        ctx.progress(0.4, "quantize: affine int4 blocks, 8-bit embeddings/head")
        result_dir = ctx.workdir / "affine"
        report = rewrite(build_dir, result_dir, block=config.block_size, accuracy_level=config.accuracy_level,
                         log=ctx.log, check_cancelled=ctx.check_cancelled)
        ctx.log(f"affine int4: {report.matmuls} weight matrices, {report.grid_exact_share:.1%} of 4-bit blocks "
                f"exactly on a d·q+m grid (max error {report.max_rel_error:.3g} of a step)")
        ctx.metric("grid_exact_share", report.grid_exact_share)
        shutil.rmtree(build_dir, ignore_errors=True)

    ctx.progress(0.55, "write: registering the export")
    final = ctx.settings.models_dir / out_id
    shutil.rmtree(final, ignore_errors=True)
    shutil.move(str(result_dir), str(final))
    size = export_size(final)
    ctx.store.add_model(id=out_id, format="onnx-genai", path=str(final), source="run", source_ref=f"run {ctx.run_id}",
                        status=ModelStatus.READY.value, params=source.params, size_bytes=size,
                        architecture=source.architecture, parent_id=source.id, run_id=ctx.run_id, owned=True)
    ctx.artifact("model", final, model_id=out_id)
    source_size = source.size_bytes if source.format == "hf" else export_size(src)
    ctx.metric("size_mb", size / 1e6)
    ctx.summary(output=out_id, variant=config.variant(), size_mb=round(size / 1e6, 1),
                size_ratio=round(size / source_size, 3) if source_size else None)
    ctx.log(f"registered '{out_id}' (onnx-genai, {size / 1e6:.1f} MB)")
    verify(ctx, config, src, final, source_size)
    ctx.metric("total_s", time.perf_counter() - t0)


def verify(ctx, config: QuantizeConfig, src: Path, export: Path, source_size: int | None) -> None:
    """Compare the export with its source on the same tokens; every number becomes a metric of the run."""
    import numpy as np
    import torch

    from ..chat import load_causal_lm
    from ..eval_text import standard_text
    from ..ort_genai import OgModel, token_nll

    if config.threads:
        torch.set_num_threads(config.threads)
    ctx.progress(0.6, "verify: loading the export with onnxruntime-genai")
    og_model = OgModel(export, threads=config.threads)
    ids = og_model.prompt_ids([{"role": "user", "content": CHECK_PROMPT}])
    answer_ids, _ = og_model.generate_ids(ids, 24)
    answer = og_model.decode(answer_ids).strip()
    ctx.log(f"verify: '{CHECK_PROMPT}' → {answer!r}")
    ctx.summary(answer=answer[:80])

    ctx.progress(0.65, "verify: decode speed")
    speeds = []
    for _ in range(3):
        ctx.check_cancelled()
        _, times = og_model.generate_ids(og_model.prompt_ids([{"role": "user", "content":
                                                                "Write a short story about a lighthouse."}]), 64)
        if len(times) > 2:
            speeds.append((len(times) - 1) / (times[-1] - times[0]))
    if speeds:
        ctx.metric("decode_tok_s", float(np.median(speeds)))
        ctx.summary(decode_tok_s=round(float(np.median(speeds)), 1))

    ctx.progress(0.7, "verify: loading the source model")
    lm, tokenizer = load_causal_lm(src)
    prompts = agreement_prompts()
    agree = 0
    for i, prompt in enumerate(prompts):
        ctx.check_cancelled()
        p_ids = og_model.prompt_ids([{"role": "user", "content": prompt}])
        with torch.inference_mode():
            ref = int(lm(input_ids=torch.tensor([p_ids])).logits[0, -1].argmax())
        agree += int(int(og_model.logits(p_ids)[-1].argmax()) == ref)
        ctx.progress(0.7 + 0.1 * (i + 1) / len(prompts), f"verify: first-token agreement {i + 1}/{len(prompts)}")
    ctx.metric("first_token_agreement", agree / len(prompts))
    ctx.summary(first_token_agreement=round(agree / len(prompts), 3))

    if config.verify_tokens:
        text_ids = tokenizer(standard_text(), add_special_tokens=False)["input_ids"][:config.verify_tokens]
        window = min(512, og_model.context)
        nll_src = nll_exp = 0.0
        count = same = 0
        starts = list(range(0, len(text_ids) - 1, window))
        for i, start in enumerate(starts):
            ctx.check_cancelled()
            chunk = text_ids[start:start + window]
            if len(chunk) < 2:
                break
            with torch.inference_mode():
                ref_logits = lm(input_ids=torch.tensor([chunk])).logits[0, :-1].double().numpy()
            exp_logits = og_model.logits(chunk)[:-1].astype(np.float64)
            target = np.asarray(chunk[1:])
            nll_src += token_nll(ref_logits, target)
            nll_exp += token_nll(exp_logits, target)
            same += int((ref_logits.argmax(1) == exp_logits.argmax(1)).sum())
            count += len(chunk) - 1
            ctx.progress(0.8 + 0.2 * (i + 1) / len(starts), f"verify: perplexity {i + 1}/{len(starts)} windows")
        ppl_src, ppl_exp = math.exp(nll_src / count), math.exp(nll_exp / count)
        ctx.metric("ppl_source", ppl_src)
        ctx.metric("ppl_export", ppl_exp)
        ctx.metric("ppl_ratio", ppl_exp / ppl_src)
        ctx.metric("next_token_agreement", same / count)
        ctx.summary(ppl=round(ppl_exp, 3), ppl_ratio=round(ppl_exp / ppl_src, 4))
        ctx.log(f"verify: perplexity {ppl_exp:.3f} vs source {ppl_src:.3f} (×{ppl_exp / ppl_src:.4f}) on "
                f"{count} tokens; next-token agreement {same / count:.1%}")
    ctx.progress(1.0, "done")

