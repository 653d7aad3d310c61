"""The one way the engine loads transformers weights and tokenizers: safetensors only, never remote code, float32
unless told otherwise. A registered GGUF export (a folder with model.gguf, engine/gguf_export.py) is read by
transformers' GGUF loader, dequantized to float32: chat, scoring and benchmarks of it go through transformers."""
from __future__ import annotations

from pathlib import Path

from .errors import InvalidInput
from .records import ModelFormat, ModelRecord


def weights_of(store, model: ModelRecord) -> tuple[str, str | None]:
    """(base folder, adapter folder or None) of a registered model: an adapter loads on top of its parent's weights.
    The one place that resolves a model record to the weights to load."""
    if model.format != ModelFormat.ADAPTER:
        return model.path, None
    if not model.parent_id or not store.has_model(model.parent_id):
        raise InvalidInput(f"Adapter '{model.id}' needs its base model '{model.parent_id}', which is no longer "
                           "registered. Register the base again under that name, or delete the adapter.")
    base = store.get_model(model.parent_id)
    if not base.ready:
        raise InvalidInput(f"Adapter '{model.id}': its base '{base.id}' is {base.status}, not ready.")
    return base.path, model.path


GGUF_FILE = "model.gguf"  # the file of a GGUF export's folder (engine/gguf_export.py writes it)


def gguf_file(path: str | Path) -> dict:
    """{'gguf_file': name} for a GGUF export's folder (from_pretrained reads the file), else {}."""
    return {"gguf_file": GGUF_FILE} if (Path(path) / GGUF_FILE).is_file() else {}


def load_tokenizer(path: str | Path, pad: bool = False):
    """A folder's tokenizer; `pad` gives it the EOS token as padding when it has none (training, batching)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, **gguf_file(path))
    if pad and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, adapter_path: str | Path | None = None, **kwargs):
    """A causal LM from a safetensors folder (with a PEFT adapter on top when given); `kwargs` go to
    from_pretrained (a dtype, a quantization config) but cannot turn the safety settings off."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf = gguf_file(path)
    options = {"dtype": torch.float32, **kwargs, "trust_remote_code": False, **(gguf or {"use_safetensors": True})}
    model = AutoModelForCausalLM.from_pretrained(str(path), **options)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=False)
    return model


def load_causal_lm(path: str | Path, adapter_path: str | Path | None = None):
    """(model in eval mode, tokenizer) of a registered HF folder, optionally with a LoRA adapter on top (whose folder
    holds the tokenizer it was trained with)."""
    tokenizer = load_tokenizer(adapter_path or path)
    model = load_model(path, adapter_path).eval()
    generation = getattr(model, "generation_config", None)
    if generation is not None:  # a model saved straight from training may say use_cache False: generate with it
        generation.use_cache = True
    return model, tokenizer
