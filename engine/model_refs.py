"""What chat and serve take as a model: a registered model's id, or `EXPORT:ADAPTER` for one adapter of an ONNX
export made with adapters (engine/onnx_adapters.py; model ids have no colon). The Engine's `resolve`, `adapters_of`
and `serve_refs` are these functions."""
from __future__ import annotations

from pathlib import Path

from .errors import InvalidInput, NotFound
from .records import ModelFormat, ModelRecord


def adapters_in(model: ModelRecord) -> list[str]:
    """The adapters an ONNX export was made with; [] for any other model."""
    from .onnx_adapters import adapter_names

    return adapter_names(Path(model.path)) if model.format == ModelFormat.ONNX else []


def resolve(engine, ref: str) -> tuple[ModelRecord, str | None]:
    """`ref` → (the ready model, the adapter's name or None); NotFound names the adapters that exist."""
    model_id, _, adapter = ref.partition(":")
    model = engine.ready_model(model_id)
    if not adapter:
        return model, None
    names = adapters_in(model)
    if adapter not in names:
        listed = (f"its adapters are {', '.join(f'{model_id}:{n}' for n in names)}" if names else
                  "it has none (export a base with adapters: quantize with `adapters`)")
        raise NotFound(f"Model '{model_id}' has no adapter '{adapter}': {listed}.")
    return model, adapter


def serve_refs(engine, model_ids: list[str], adapters: list[str] = ()) -> list[str]:
    """`model_ids` (each a model or `EXPORT:ADAPTER`) and, for each of `adapters`, every `EXPORT:ADAPTER` of the
    listed exports that has it; each checked by `resolve`."""
    have = {m: adapters_in(engine.get_model(m)) for m in model_ids if ":" not in m} if adapters else {}
    refs = list(model_ids)
    for name in adapters:
        with_it = [m for m, names in have.items() if name in names]
        if not with_it:
            raise InvalidInput(f"None of {', '.join(model_ids)} has an adapter '{name}': serve an ONNX export "
                               "made with adapters (the Quantize tab's exports table lists their adapters).")
        refs += [f"{m}:{name}" for m in with_it]
    for ref in refs:
        resolve(engine, ref)
    return list(dict.fromkeys(refs))
