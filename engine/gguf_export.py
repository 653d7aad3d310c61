"""GGUF exports for llama.cpp, Ollama and LM Studio: a Llama-family safetensors folder written as one .gguf file with
the `gguf` package's writer and quantizers (F32, F16, Q8_0, Q4_1), its tokenizer and chat template in the metadata,
and an Ollama Modelfile beside it.

The layout follows llama.cpp's convert_hf_to_gguf.py for `llama`: tensor names from gguf's name map, the q/k
projections permuted back to llama.cpp's rotary layout (transformers undoes that permutation when it reads a GGUF),
1-D tensors (norms) in F32, and for Q4_1 the token embedding in Q8_0 as llama.cpp's quantizer leaves it. A matrix
whose rows do not split into the type's blocks is written F16 (also as llama.cpp does).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .chat_template import chat_pieces
from .errors import InvalidInput
from .loading import GGUF_FILE, load_tokenizer

MODELFILE = "Modelfile"
TYPES = ("q4_1", "q8_0", "f16", "f32")
SUPPORTED = {"LlamaForCausalLM"}  # what llama.cpp reads as `llama` with this tensor layout


def check_architecture(folder: Path) -> dict:
    """The folder's config.json, or InvalidInput naming the architecture and what can be exported instead."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise InvalidInput(f"{folder} has no config.json: GGUF export needs a transformers model folder.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    archs = config.get("architectures") or [config.get("model_type", "?")]
    if not SUPPORTED.intersection(archs):
        raise InvalidInput(f"GGUF export writes Llama-family models (LlamaForCausalLM: SmolLM, Llama, TinyLlama …); "
                           f"this model is {', '.join(archs)}. Export it to ONNX Runtime GenAI instead (Quantize).")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in {"default", None}:
        raise InvalidInput(f"GGUF export: rope scaling '{rope.get('rope_type', rope.get('type'))}' is not written "
                           "by this exporter (only plain rotary embeddings). Export it to ONNX Runtime GenAI instead.")
    return config


def _ggml_type(name: str, shape: tuple[int, ...], qtype: str):
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

    wanted = {"q4_1": Q.Q4_1, "q8_0": Q.Q8_0, "f16": Q.F16, "f32": Q.F32}[qtype]
    if len(shape) == 1 or qtype == "f32":
        return Q.F32
    if name == "token_embd.weight" and qtype == "q4_1":
        wanted = Q.Q8_0  # llama.cpp's quantizer keeps the (tied) embedding at 8 bits in a Q4_1 model
    block = GGML_QUANT_SIZES[wanted][0]
    return wanted if shape[-1] % block == 0 else Q.F16


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """transformers' rotary layout (halves) → llama.cpp's (interleaved pairs), per head; as convert_hf_to_gguf.py."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_metadata(writer, folder: Path, vocab_size: int, pre: str) -> None:
    """Tokens with their types (special added tokens are CONTROL), merges, special ids, chat template."""
    import gguf

    tokenizer = load_tokenizer(folder)
    tokenizer_json = Path(folder) / "tokenizer.json"
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8")) if tokenizer_json.is_file() else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise InvalidInput("GGUF export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM's); this model's "
                           f"tokenizer is {model.get('type', 'not a tokenizer.json')}. Export it to ONNX instead.")
    reverse = {i: tok for tok, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.chat_template = None  # written below from the tokenizer (which reads chat_template.jinja too)
    special.add_to_gguf(writer, quiet=True)
    pre_tokenizers = spec.get("pre_tokenizer") or {}
    pre_tokenizers = pre_tokenizers.get("pretokenizers", [pre_tokenizers])
    writer.add_add_space_prefix(any(p.get("add_prefix_space") for p in pre_tokenizers if p))
    if "bos" not in special.add_special_token:  # what the tokenizer does to a plain text, as llama.cpp must
        ids = tokenizer("a")["input_ids"]
        writer.add_add_bos_token(bool(ids) and ids[0] == tokenizer.bos_token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(folder: Path, out: Path, qtype: str, *, name: str, pre: str = "default", log=print,
               check_cancelled=lambda: None) -> dict:
    """Write the Llama-family model in `folder` to the GGUF file `out` at `qtype`; returns facts about it."""
    import gguf
    from safetensors import safe_open

    if qtype not in TYPES:
        raise InvalidInput(f"GGUF type '{qtype}' is not one of {', '.join(TYPES)}.")
    folder, out = Path(folder), Path(out)
    config = check_architecture(folder)
    n_layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = config.get("rope_parameters") or {}
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(name)
    writer.add_block_count(n_layers)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[qtype])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim)
    _tokenizer_metadata(writer, folder, config["vocab_size"], pre)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    counts: dict[str, int] = {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidInput(f"{folder} has no .safetensors weights to export.")
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp uses token_embd when output.weight is absent
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                target = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise InvalidInput(f"GGUF export: no llama.cpp name for tensor '{key}' (not a plain Llama "
                                       "layout). Export it to ONNX Runtime GenAI instead.")
                data = f.get_tensor(key).float().numpy()
                if key.endswith("q_proj.weight"):
                    data = _permute(data, heads)
                elif key.endswith("k_proj.weight"):
                    data = _permute(data, kv_heads)
                ggml = _ggml_type(target, data.shape, qtype)
                packed = data if ggml == gguf.GGMLQuantizationType.F32 else gguf.quants.quantize(data, ggml)
                writer.add_tensor(target, packed, raw_shape=packed.shape if ggml.name in ("F32", "F16") else None,
                                  raw_dtype=ggml)
                counts[ggml.name] = counts.get(ggml.name, 0) + 1
                check_cancelled()
    log(f"gguf: {sum(counts.values())} tensors ({', '.join(f'{n} {t}' for t, n in sorted(counts.items()))})")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": counts, "size_bytes": out.stat().st_size}


# --- Ollama -----------------------------------------------------------------------------------------------------

def _go(text: str) -> str:
    """Literal text inside an Ollama (Go) template."""
    return text.replace("{{", '{{ "{{" }}')


def modelfile(tokenizer, gguf_name: str = GGUF_FILE, system: str = "", params: dict | None = None) -> str:
    """An Ollama Modelfile for the GGUF: FROM, a TEMPLATE derived from the chat template, stop parameters, and the
    system prompt (the given one, else the one the template adds when a conversation has none)."""
    pieces = chat_pieces(tokenizer)
    template = "{{- range $i, $_ := .Messages }}"
    for n, role in enumerate(("system", "user", "assistant")):
        before, after = pieces[role]
        template += (f'{{{{ {"if" if n == 0 else "else if"} eq .Role "{role}" }}}}'
                     f"{_go(before)}{{{{ .Content }}}}{_go(after)}")
    template += "{{ end }}{{ end }}" + _go(pieces["generation"])  # no {{- : it would trim the texts' newlines
    system = system or pieces["default_system"]
    stops = []
    for text in (pieces["assistant"][1].strip(), pieces["user"][0].strip(), tokenizer.eos_token):
        if text and text not in stops:
            stops.append(text)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in (params or {}).items()]
    return "\n".join(lines) + "\n"


def render_go_template(template: str, messages: list[dict]) -> str:
    """What Ollama's template engine makes of our TEMPLATE for `messages` (the subset of Go templates that
    `modelfile` writes: one range over .Messages, if/else-if on .Role, .Content, literal text): for tests."""
    import re

    body = re.fullmatch(r"\{\{- range \$i, \$_ := \.Messages \}\}(.*)\{\{ end \}\}\{\{ end \}\}(.*)", template,
                        re.S)
    if body is None:
        raise ValueError("not a template written by modelfile()")
    branches = re.findall(r'\{\{ (?:if|else if) eq \.Role "(\w+)" \}\}(.*?)(?=\{\{ else if|\Z)', body.group(1),
                          re.S)
    literal = lambda t: t.replace('{{ "{{" }}', "{{")  # noqa: E731
    parts = dict(branches)
    out = ""
    for m in messages:
        before, after = parts[m["role"]].split("{{ .Content }}")
        out += literal(before) + m["content"] + literal(after)
    return out + literal(body.group(2))
