"""Job `quantize`: build an ONNX Runtime GenAI export of a registered model, quantize it, register it with lineage,
and verify it against its source (answer, first-token agreement, perplexity on the standard text, decode speed).

Stages: load (merge an adapter) → fit (affine int4 of weights off the 4-bit grid: a calibrated GPTQ fit,
engine/int4_fit.py) → convert (model builder) → quantize (affine int4) → verify (engine/export_verify.py: the export
is refused when it lost its source's behaviour) → write (register).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..chat_template import FOUNDRY_FILE
from ..configs import AddAdaptersConfig, QuantizeConfig
from ..errors import InvalidInput, VerificationFailed
from ..export_verify import (Verifier, adapter_examples, check_agreement, check_task_kept, check_task_retention,
                             verify_adapter)
from ..exports import register_onnx
from ..onnx_export import builder_command, check_disk, check_export, export_size, run_builder
from ..records import ModelFormat

CONFIG = QuantizeConfig
def merged_source(ctx, model, out: Path | None = None) -> Path:
    """The HF folder to export: the model itself, or its adapter merged into the base in the run folder (`out`,
    default <run>/merged)."""
    if model.format == ModelFormat.HF:
        return Path(model.path)
    from ..loading import load_model, load_tokenizer

    base = ctx.store.get_model(model.parent_id)
    ctx.log(f"merging LoRA adapter '{model.id}' into its base '{base.id}' before export")
    lm = load_model(base.path, model.path).merge_and_unload()
    out = out or ctx.workdir / "merged"
    lm.save_pretrained(out, safe_serialization=True)
    has_own = any((Path(model.path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    load_tokenizer(model.path if has_own else base.path).save_pretrained(out)
    return out


def fused_kernel(ctx, config: QuantizeConfig) -> Path | None:
    """The fused Q4_1 kernel library for an affine int4 export, or None (portable graph; the log says why)."""
    from ..kernels import KernelUnavailable, library

    if config.kernel != "fused":
        return None
    if config.execution_provider != "cpu":
        ctx.log(f"fused kernel: a CPU kernel; for {config.execution_provider} → portable ONNX Runtime ops")
        return None
    if config.block_size != 32 or config.accuracy_level != 4:
        ctx.log(f"fused kernel: written for block 32 with int8 activations (accuracy level 4); block "
                f"{config.block_size}, level {config.accuracy_level} → portable ONNX Runtime ops")
        return None
    try:
        path = library(ctx.settings.cache_dir / "kernels")
    except KernelUnavailable as exc:
        ctx.log(f"fused kernel unavailable: {exc} → portable ONNX Runtime ops")
        return None
    ctx.log(f"fused kernel: {path.name} (one Q41MatMul per 4-bit weight matrix)")
    return path


def delta_parent(ctx, source):
    """The model a fine-tune's change is measured against: the oldest ready ancestor in the lineage with the same
    architecture and parameter count (a LoRA adapter's base counts as the same shape), or None."""
    store, found, seen = ctx.store, None, {source.id}
    params = source.params if source.format == ModelFormat.HF else None
    current = source
    while current.parent_id and current.parent_id not in seen and store.has_model(current.parent_id):
        up = store.get_model(current.parent_id)
        params = params if params is not None else up.params
        if up.format != ModelFormat.HF or not up.ready or up.architecture != source.architecture or up.params != params:
            break
        found, current = up, up
        seen.add(up.id)
    return found


def parent_export(ctx, config: QuantizeConfig, parent) -> Path:
    """The fp32 build of the delta parent, in the run folder (built once per run, shared by sweep candidates)."""
    out = ctx.workdir / "parent-fp32"
    if not (out / "model.onnx").is_file():
        ctx.stage(f"convert: the fp32 build of '{parent.id}', to measure the fine-tune's change against")
        shutil.rmtree(out, ignore_errors=True)
        run_builder(builder_command(Path(parent.path), out, "fp32", config, ctx.settings.cache_dir / "onnx-builder"),
                    ctx.workdir, ctx.log, ctx.check_cancelled)
    return out


def fitted_source(ctx, config: QuantizeConfig, source, src: Path, parent) -> tuple[Path, dict]:
    """The HF folder an affine int4 export is built from: `src`, or — when its weights are off the 4-bit grid (or
    fit is gptq) — its calibrated GPTQ fit, made once per run in the run folder (engine/int4_fit.py)."""
    from ..int4_fit import calibration_batches, fit_model, off_grid_share, training_data

    if config.fit == "minmax":
        return src, {}
    if parent is not None and config.fine_tune_delta == "auto":
        return src, {}  # the fine-tune's change rides beside the parent's exact 4-bit weights
    out = ctx.workdir / f"fitted-b{config.block_size}"  # a sweep's candidates of one block size share it
    if (out / "config.json").is_file():
        return out, {"fit": "gptq"}
    if config.fit == "auto":
        off = off_grid_share(src, config.block_size)
        if off < 0.01:
            ctx.log(f"fit: {1 - off:.1%} of the 4-bit blocks are on a Q4_1 grid already → min/max rounding (exact)")
            return src, {"fit": "minmax"}
        ctx.log(f"fit: {off:.1%} of the 4-bit blocks are off the grid (trained after rounding) → calibrated fit")
    path = config.calibration_path or training_data(ctx.store, source)
    if not path:
        ctx.log("fit: no calibration data (set calibration_path; the model's training data is not known) → "
                "min/max rounding, which may erase what the model learned after rounding", "warning")
        return src, {"fit": "minmax"}
    import torch

    from ..loading import load_causal_lm

    ctx.stage(f"quantize: calibrated int4 fit (GPTQ) on {config.calibration_examples} examples of {path}")
    model, tokenizer = load_causal_lm(src)
    if config.threads:
        torch.set_num_threads(config.threads)
    batches = calibration_batches(path, tokenizer, config.calibration_examples)
    facts = fit_model(model, batches, config.block_size, ctx.log, ctx.check_cancelled)
    ctx.log(f"fit: {facts['matrices']} weight matrices fitted on {facts['calibration_tokens']} calibration tokens "
            f"in {facts['seconds']:.0f} s; output error {facts['output_error_vs_minmax']:.2f}× min/max rounding's")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out, {"fit": "gptq", "fit_output_error": facts["output_error_vs_minmax"], "fit_s": facts["seconds"]}


def remove_intermediates(workdir: Path) -> None:
    """The parent's fp32 build and the fitted source: needed while building, not after."""
    for folder in [workdir / "parent-fp32", *workdir.glob("fitted-b*")]:
        shutil.rmtree(folder, ignore_errors=True)


def build_export(ctx, config: QuantizeConfig, src: Path, out_dir: Path, progress=(0.08, 0.4),
                 parent=None, source=None) -> dict:
    """Build one variant into `out_dir` (builder, then the affine rewrite for int4 affine); returns its facts.
    `parent`: the delta parent (see delta_parent) whose weights an affine int4 export of a fine-tune starts from;
    `source`: the source's record (its lineage names the calibration data of a calibrated fit)."""
    t0 = time.perf_counter()
    affine = config.precision == "int4" and config.method == "affine"
    olive = config.precision == "int4" and config.method == "olive"
    build_precision = "fp32" if affine or olive else config.precision
    fit = {}
    if affine and source is not None:
        src, fit = fitted_source(ctx, config, source, src, parent)
    build_dir = out_dir.with_name(out_dir.name + f".build-{build_precision}")
    shutil.rmtree(build_dir, ignore_errors=True)
    ctx.progress(progress[0], f"convert: ONNX Runtime GenAI builder ({config.variant()})")
    run_builder(builder_command(src, build_dir, build_precision, config, ctx.settings.cache_dir / "onnx-builder"),
                ctx.workdir, ctx.log, ctx.check_cancelled)
    facts = {"build_s": time.perf_counter() - t0, **fit}
    if affine:
        from ..onnx_affine import rewrite

        ctx.progress(progress[1], f"quantize: affine int4 ({config.variant()})")
        fused = fused_kernel(ctx, config)
        parent_dir = None
        if parent is not None and config.fine_tune_delta == "auto":
            ctx.log(f"fine-tune delta: '{parent.id}' is the model this one was fine-tuned from")
            parent_dir = parent_export(ctx, config, parent)
        report = rewrite(build_dir, out_dir, block=config.block_size, accuracy_level=config.accuracy_level,
                         log=ctx.log, check_cancelled=ctx.check_cancelled, fused_library=fused,
                         parent_dir=parent_dir, adapter_slots=bool(config.adapters))
        facts["fused_kernel"] = 1.0 if fused else 0.0
        facts["low_rank_deltas"] = float(report.low_rank_deltas)
        facts["eight_bit_deltas"] = float(report.eight_bit_deltas)
        if report.rounding_keeps is not None:
            facts["rounding_keeps"] = report.rounding_keeps
        ctx.log(f"affine int4: {report.matmuls} weight matrices, {report.grid_exact_share:.1%} of 4-bit blocks "
                f"exactly on a d·q+m grid (max error {report.max_rel_error:.3g} of a step)")
        facts["grid_exact_share"] = report.grid_exact_share
        if config.adapters and fit.get("fit") != "gptq":  # the base's own fp32 build: adapters are measured on it
            shutil.rmtree(ctx.workdir / "parent-fp32", ignore_errors=True)
            build_dir.rename(ctx.workdir / "parent-fp32")
        shutil.rmtree(build_dir, ignore_errors=True)
    elif olive:
        from ..onnx_export import run_olive

        ctx.progress(progress[1], f"quantize: Olive {config.olive_pass} ({config.variant()})")
        run_olive(build_dir, out_dir, config, ctx.workdir, ctx.settings.cache_dir, ctx.log, ctx.check_cancelled)
        shutil.rmtree(build_dir, ignore_errors=True)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
        build_dir.rename(out_dir)
    facts["size_bytes"] = export_size(out_dir)
    return facts


def register_export(ctx, source, folder: Path, out_id: str) -> Path:
    final = register_onnx(ctx.store, ctx.settings.models_dir, source, folder, out_id, ctx.run_id)
    foundry = " + Foundry Local's inference_model.json" if (final / FOUNDRY_FILE).is_file() else ""
    ctx.log(f"registered '{out_id}' (onnx-genai{foundry}, {export_size(final) / 1e6:.1f} MB)")
    return final


def prepare_source(ctx, config: QuantizeConfig):
    source = ctx.store.get_model(config.model_id)
    ctx.progress(0.02, "load: preparing the source model")
    src = merged_source(ctx, source)
    facts = check_export(src, config, source.params)
    check_disk(ctx.settings.models_dir, facts["bytes_needed"])
    ctx.check_cancelled()
    source_size = source.size_bytes if source.format == ModelFormat.HF else export_size(src)
    return source, src, source_size


def run(ctx, config: QuantizeConfig) -> None:
    out_id = config.output_id()
    if ctx.store.has_model(out_id):
        raise InvalidInput(f"a model named '{out_id}' already exists; choose another output name")
    t0 = time.perf_counter()
    source, src, source_size = prepare_source(ctx, config)
    folder = ctx.workdir / "export"
    parent = None if config.adapters else delta_parent(ctx, source)  # adapters ride on the base's own weights
    facts = build_export(ctx, config, src, folder, parent=parent, source=source)
    if not config.adapters:
        remove_intermediates(ctx.workdir)
    for name in ("build_s", "grid_exact_share", "fused_kernel", "low_rank_deltas", "eight_bit_deltas",
                 "rounding_keeps", "fit_output_error", "fit_s"):
        if name in facts:
            ctx.metric(name, facts[name])
    if "fit" in facts:
        ctx.summary(fit=facts["fit"])
    size = facts["size_bytes"]
    ctx.metric("size_mb", size / 1e6)
    ctx.summary(variant=config.variant(), size_mb=round(size / 1e6, 1),
                size_ratio=round(size / source_size, 3) if source_size else None)
    verifier = Verifier(ctx, src, config.threads, config.verify_tokens)
    result = verifier.measure(folder, (0.5, 0.97))
    for name, value in result.items():
        if isinstance(value, (int, float)):
            ctx.metric(name, value)
    ctx.summary(answer=result["answer"][:80], decode_tok_s=round(result["decode_tok_s"], 1),
                first_token_agreement=round(result["first_token_agreement"], 3),
                **({"ppl": round(result["ppl_export"], 3), "ppl_ratio": round(result["ppl_ratio"], 4)}
                   if "ppl_ratio" in result else {}))
    if config.task:  # the task is the verdict; general prompts are context (a task-only student babbles on them)
        ctx.log(f"first-token agreement on the general check prompts: {result['first_token_agreement']:.0%} "
                "(context only: this export is judged on its task)")
        from ..ort_genai import OgModel
        from ..scoring import answerer

        check_task_retention(ctx, config, answerer(verifier.lm, verifier.tokenizer),
                             OgModel(folder, threads=config.threads).answer, folder)
    else:
        check_agreement(result, config.min_agreement, folder)
    if config.adapters:
        export_adapters(ctx, config, source, folder)
        remove_intermediates(ctx.workdir)
    ctx.progress(0.98, "write: registering the export")
    register_export(ctx, source, folder, out_id)
    ctx.summary(output=out_id)
    ctx.metric("total_s", time.perf_counter() - t0)
    ctx.progress(1.0, "done")


def export_adapters(ctx, config, base, folder: Path, out_dir: Path | None = None) -> list[Path]:
    """Each adapter of config.adapters → <out_dir>/<name>.onnx_adapter (default: the export's adapters folder),
    checked against its transformers adapter on its held-out examples; a check that fails raises (nothing is
    registered). `config`: a QuantizeConfig or an AddAdaptersConfig."""
    from ..onnx_adapters import ADAPTER_SUFFIX, ADAPTERS_DIR, convert
    from ..ort_genai import OgModel

    out_dir = out_dir or folder / ADAPTERS_DIR
    fp32 = QuantizeConfig(model_id=base.id, precision="fp32")  # the builder settings of the fp32 builds

    base_fp32 = parent_export(ctx, fp32, base)
    og_model = OgModel(folder, threads=config.threads)
    rows = []
    for i, name in enumerate(config.adapters):
        ctx.check_cancelled()
        adapter = ctx.store.get_model(name)
        ctx.progress(0.75 + 0.2 * i / len(config.adapters), f"adapters: converting '{name}'")
        merged = merged_source(ctx, adapter, ctx.workdir / f"merged-{name}")
        merged_fp32 = ctx.workdir / f"adapter-fp32-{name}"
        run_builder(builder_command(merged, merged_fp32, "fp32", fp32, ctx.settings.cache_dir / "onnx-builder"),
                    ctx.workdir, ctx.log, ctx.check_cancelled)
        t0 = time.perf_counter()
        file = convert(folder, base_fp32, merged_fp32, name, ctx.log, out_dir)
        shutil.rmtree(merged_fp32, ignore_errors=True)
        examples, mode, max_new = adapter_examples(ctx.store, adapter, config.adapter_examples, ctx.log)
        row = verify_adapter(ctx, og_model.with_adapter(name, file), merged, examples, mode, max_new)
        row["convert_s"] = round(time.perf_counter() - t0, 2)
        shutil.rmtree(merged, ignore_errors=True)
        rows.append(row)
        ctx.summary(adapters=rows)
        score = (f"; answers {row['export_score']:.0%} vs transformers {row['source_score']:.0%} ({row['mode']} "
                 f"match)" if "export_score" in row else "")
        ctx.log(f"adapter '{name}': the export picks the transformers adapter's greedy token on "
                f"{row['greedy_agreement']:.1%} of {row['tokens']} tokens over {row['examples']} held-out "
                f"examples{score}")
        if row["greedy_agreement"] < config.min_agreement:
            raise VerificationFailed(
                f"Verification failed: with adapter '{name}' the export picks the transformers adapter's greedy token "
                f"on only {row['greedy_agreement']:.0%} of its held-out replies (min_agreement "
                f"{config.min_agreement:.0%}). Nothing was registered; the files are in {folder}.")
        if "export_score" in row:
            check_task_kept(f"{name}'s held-out examples", row["source_score"], row["export_score"],
                            config.min_task_retention, folder)
    return [out_dir / f"{name}{ADAPTER_SUFFIX}" for name in config.adapters]


def run_add_adapters(ctx, config: AddAdaptersConfig) -> None:
    """Convert and check the new adapters in the run folder, then move them into the export's adapters folder
    (each a rename: the export never holds a half-written adapter) and update its size."""
    from ..onnx_adapters import ADAPTERS_DIR

    export = ctx.store.get_model(config.model_id)
    base = ctx.store.get_model(export.parent_id)
    ctx.summary(output=export.id)
    files = export_adapters(ctx, config, base, Path(export.path), ctx.workdir / "adapters")
    target = Path(export.path) / ADAPTERS_DIR
    target.mkdir(exist_ok=True)
    for file in files:
        file.replace(target / file.name)
    ctx.store.update_model(export.id, size_bytes=export_size(Path(export.path)))
    remove_intermediates(ctx.workdir)
    ctx.log(f"added {', '.join(config.adapters)} to '{export.id}' (chat and serve: {export.id}:ADAPTER)")
    ctx.progress(1.0, "done")


def run_sweep(ctx, config) -> None:
    """Build and verify each candidate; register the fastest within the quality bound."""
    candidates = config.candidate_configs()
    source, src, source_size = prepare_source(ctx, candidates[0])
    parent = delta_parent(ctx, source)
    verifier = Verifier(ctx, src, config.threads, config.verify_tokens)
    results = []
    share = 0.95 / len(candidates)
    for i, cand in enumerate(candidates):
        name = cand.variant()
        lo = 0.03 + i * share
        try:
            check_export(src, cand, source.params)
        except InvalidInput as exc:
            ctx.log(f"candidate {name} skipped: {exc}", "warning")
            continue
        folder = ctx.workdir / "candidates" / name
        facts = build_export(ctx, cand, src, folder, progress=(lo, lo + 0.2 * share), parent=parent, source=source)
        result = verifier.measure(folder, (lo + 0.3 * share, lo + share))
        row = {"variant": name, "size_mb": round(facts["size_bytes"] / 1e6, 1),
               "size_ratio": round(facts["size_bytes"] / source_size, 3) if source_size else None,
               "decode_tok_s": round(result["decode_tok_s"], 1),
               "ppl_ratio": round(result.get("ppl_ratio", float("nan")), 4),
               "first_token_agreement": round(result["first_token_agreement"], 3), "answer": result["answer"][:60]}
        results.append(row)
        for key in ("size_mb", "decode_tok_s", "ppl_ratio", "first_token_agreement"):
            ctx.metric(key, row[key], step=i)
        ctx.summary(candidates=results)
    remove_intermediates(ctx.workdir)
    within = [r for r in results if r["ppl_ratio"] <= config.max_ppl_ratio
              and r["first_token_agreement"] >= config.min_agreement]
    if not within:
        ctx.summary(chosen=None)
        ctx.log(f"no candidate keeps perplexity within ×{config.max_ppl_ratio} and first-token agreement ≥ "
                f"{config.min_agreement}; none registered (register one from the Quantize tab if you accept the "
                "loss)", "warning")
        return
    best = max(within, key=lambda r: (r["decode_tok_s"], -r["size_mb"]))
    out_id = config.output_name.strip() or f"{source.id}-onnx-{best['variant']}"
    if ctx.store.has_model(out_id):
        out_id = f"{out_id}-run{ctx.run_id}"
    register_export(ctx, source, ctx.workdir / "candidates" / best["variant"], out_id)
    best["model_id"] = out_id  # export_summary finds a registered candidate's numbers by this
    ctx.summary(chosen=best["variant"], output=out_id, max_ppl_ratio=config.max_ppl_ratio, candidates=results)
    ctx.log(f"chose {best['variant']}: fastest within ×{config.max_ppl_ratio} perplexity "
            f"({best['decode_tok_s']} tok/s, {best['size_mb']} MB, ×{best['ppl_ratio']})")
    ctx.progress(1.0, "done")
