"""What runs make, as registered models: publishing a finished folder (fine-tunes, adapters, students, ONNX
exports), and the verified numbers of each ONNX export (from the run that made it) for the tables, the lineage view
and the choice of the fastest good export."""
from __future__ import annotations

import shutil
from pathlib import Path

from .records import EXPORT_FORMATS, ModelFormat, ModelStatus


def publish_model(store, models_dir: Path, folder: Path, model_id: str, fmt: str, parent, run_id: int, *,
                  params: int | None = None, note: str = "") -> Path:
    """Move a run's finished folder to models/<model_id> and register it as the child of `parent`, made by `run_id`
    (the files are complete before the record exists); the run lists it as an artifact. The one way a job publishes
    a model: fine-tunes, adapters, students and ONNX exports."""
    from .models import dir_size, safetensors_params

    final = models_dir / model_id
    shutil.rmtree(final, ignore_errors=True)
    shutil.move(str(folder), str(final))
    size = dir_size(final)
    store.add_model(id=model_id, format=fmt, path=str(final), source="run",
                    source_ref=f"run {run_id}" + (f": {note}" if note else ""), status=ModelStatus.READY.value,
                    params=safetensors_params(final) if params is None else params, size_bytes=size,
                    architecture=parent.architecture, parent_id=parent.id, run_id=run_id, owned=True)
    store.add_artifact(run_id, "adapter" if fmt == ModelFormat.ADAPTER else "model", str(final), size, model_id)
    return final


def register_onnx(store, models_dir: Path, source, folder: Path, out_id: str, run_id: int) -> Path:
    """Publish a built ONNX export of `source` (its parameter count is the source's), with Foundry Local's
    inference_model.json named after it when its tokenizer has a chat template."""
    from .chat_template import write_foundry_file
    from .loading import load_tokenizer

    write_foundry_file(folder, out_id, load_tokenizer(folder))
    return publish_model(store, models_dir, folder, out_id, ModelFormat.ONNX, source, run_id, params=source.params)


def register_candidate(store, settings, run_id: int, variant: str, name: str | None = None):
    """Register a candidate a quantize sweep built but did not choose (it stays in the run folder until then)."""
    from .configs import QuantizeSweepConfig
    from .errors import InvalidInput
    from .models import check_model_id

    run = store.get_run(run_id)
    if run.kind != QuantizeSweepConfig.kind or not run.status.final:
        raise InvalidInput(f"Run {run_id} is not a finished quantize sweep.")
    folder = settings.runs_dir / str(run_id) / "candidates" / variant
    if not folder.is_dir():
        raise InvalidInput(f"Run {run_id} has no candidate '{variant}' left (it was registered already, or "
                           "was never built).")
    source = store.get_model(run.model_id)
    model_id = check_model_id((name or "").strip() or f"{source.id}-onnx-{variant}")
    if store.has_model(model_id):
        raise InvalidInput(f"A model named '{model_id}' already exists: choose another name.")
    register_onnx(store, settings.models_dir, source, folder, model_id, run_id)
    rows = [dict(c, model_id=model_id) if c["variant"] == variant else c for c in run.summary["candidates"]]
    store.merge_summary(run_id, {"candidates": rows})
    return store.get_model(model_id)


def export_summary(store, model) -> dict:
    """The verified numbers of an ONNX or GGUF export (variant, size, perplexity ratio, decode speed…) from the run
    that made it; for a sweep, the row of its candidate. Empty when unknown."""
    if model.format not in EXPORT_FORMATS or not model.run_id:
        return {}
    try:
        summary = store.get_run(model.run_id).summary
    except Exception:  # noqa: BLE001 - the run was deleted: the numbers are gone, the model stays
        return {}
    for cand in summary.get("candidates", []):
        if cand.get("model_id", summary.get("output") if cand["variant"] == summary.get("chosen") else None) \
                == model.id:  # sweeps before candidates carried model_id named only the chosen one's output
            return dict(cand)
    return {k: v for k, v in summary.items() if not isinstance(v, (list, dict))}


def best_export(store, source_id: str, max_ppl_ratio: float = 1.05):
    """The fastest ready ONNX export of `source_id` whose verified perplexity stays within the bound, or None."""
    best, best_speed = None, -1.0
    for m in store.list_models():
        if m.format != ModelFormat.ONNX or m.parent_id != source_id or not m.ready:
            continue
        facts = export_summary(store, m)
        ratio, speed = facts.get("ppl_ratio"), facts.get("decode_tok_s") or 0.0
        if ratio is not None and ratio <= max_ppl_ratio and speed > best_speed:
            best, best_speed = m, speed
    return best


def scoring_export(store, model, backend: str):
    """The ONNX export that answers for `model` when it is scored: the model itself when it is one; for `auto` and
    `onnx` its fastest verified export (None under `auto` when it has none: transformers answers). `onnx` without
    an export is refused."""
    if model.format == ModelFormat.ONNX:
        return model
    if backend == "transformers":
        return None
    export = best_export(store, model.id)
    if export is None and backend == "onnx":
        from .errors import InvalidInput

        raise InvalidInput(f"'{model.id}' has no verified ONNX export: build one in the Quantize tab, or score it "
                           "with backend transformers (or auto).")
    return export
