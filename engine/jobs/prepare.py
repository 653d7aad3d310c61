"""Job `prepare_model`: convert a GGUF file (or download a Hub repo) into a safetensors folder and mark it ready."""
from __future__ import annotations

from ..configs import PrepareModelConfig
from ..models import convert_gguf, download_hub, inspect_hf_folder
from ..records import ModelStatus

CONFIG = PrepareModelConfig


def run(ctx, config: PrepareModelConfig) -> None:
    model = ctx.store.get_model(config.model_id)
    out_dir = ctx.settings.models_dir / config.model_id
    steps = iter([(0.05, "loading tokenizer"), (0.3, "dequantizing weights"), (0.8, "writing safetensors")])

    def stage(message: str) -> None:
        ctx.log(message)
        fraction, _ = next(steps, (0.9, ""))
        ctx.progress(fraction, message)
        ctx.check_cancelled()

    if config.source == "gguf":
        ctx.progress(0.01, f"converting {config.source_ref}")
        convert_gguf(config.source_ref, out_dir, log=stage)
    else:
        ctx.progress(0.01, f"downloading {config.source_ref} from the Hugging Face Hub")
        ctx.log(f"downloading {config.source_ref}")
        download_hub(config.source_ref, out_dir, config.revision, ctx.settings.cache_dir / "huggingface" / "hub")
    ctx.progress(0.95, "validating")
    facts = inspect_hf_folder(out_dir)
    ctx.store.update_model(model.id, status=ModelStatus.READY.value, path=str(out_dir), error=None, **facts)
    ctx.artifact("model", out_dir, model_id=model.id)
    ctx.summary(params_m=round(facts["params"] / 1e6, 1), size_mb=round(facts["size_bytes"] / 1e6, 1))
    ctx.log(f"model '{model.id}' ready: {facts['architecture']}, {facts['params']:,} parameters")
