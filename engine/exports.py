"""ONNX exports as registered models: registering a built export folder, and the verified numbers of each export
(from the run that made it) for the tables, the lineage view and the choice of the fastest good export."""
from __future__ import annotations

import shutil
from pathlib import Path

from .onnx_export import export_size
from .records import ModelStatus


def register_onnx(store, models_dir: Path, source, folder: Path, out_id: str, run_id: int) -> Path:
    """Move a built export into the models folder and register it (files complete before the record exists)."""
    final = models_dir / out_id
    shutil.rmtree(final, ignore_errors=True)
    shutil.move(str(folder), str(final))
    size = export_size(final)
    store.add_model(id=out_id, format="onnx-genai", path=str(final), source="run", source_ref=f"run {run_id}",
                    status=ModelStatus.READY.value, params=source.params, size_bytes=size,
                    architecture=source.architecture, parent_id=source.id, run_id=run_id, owned=True)
    store.add_artifact(run_id, "model", str(final), size, out_id)
    return final


def export_summary(store, model) -> dict:
    """The verified numbers of an ONNX export (variant, size, perplexity ratio, decode speed…) from the run that
    made it; for a sweep, the row of its candidate. Empty when unknown."""
    if model.format != "onnx-genai" or not model.run_id:
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
        if m.format != "onnx-genai" or m.parent_id != source_id or not m.ready:
            continue
        facts = export_summary(store, m)
        ratio, speed = facts.get("ppl_ratio"), facts.get("decode_tok_s") or 0.0
        if ratio is not None and ratio <= max_ppl_ratio and speed > best_speed:
            best, best_speed = m, speed
    return best
