"""Job `gguf`: write a registered Llama-family model as a GGUF file with an Ollama Modelfile (engine/gguf_export.py),
read it back with transformers' GGUF loader (a reader independent of our writer) and compare it with its source on
the standard text (largest logit difference, top-1 agreement, perplexity), the first reply token of 16 chat prompts
and, with a task, the task score; register it when it keeps its source's behaviour.

Stages: load (merge an adapter) → convert (write the GGUF and the Modelfile) → verify → write (register).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..configs import GgufConfig
from ..errors import InvalidInput
from ..export_verify import CHECK_PROMPT, agreement_prompts, check_agreement, check_task_retention
from ..exports import publish_model
from ..gguf_export import GGUF_FILE, MODELFILE, modelfile, write_gguf
from ..records import ModelFormat
from .quantize import merged_source

CONFIG = GgufConfig


def tokenizer_pre(store, model) -> str:
    """llama.cpp's pre-tokenizer name: the one in the GGUF file the model's lineage started from (the bundled
    model's is 'smollm'), else 'default' (llama.cpp's generic byte-level split)."""
    from gguf import GGUFReader

    seen = set()
    while model.parent_id and model.parent_id not in seen and store.has_model(model.parent_id):
        seen.add(model.id)
        model = store.get_model(model.parent_id)
    ref = Path(model.source_ref or "")
    if model.source in {"bundled", "gguf"} and ref.suffix == ".gguf" and ref.is_file():
        field = GGUFReader(str(ref)).fields.get("tokenizer.ggml.pre")
        if field is not None:
            return str(field.contents())
    return "default"


def compare(ctx, source, export, verify_tokens: int, span=(0.4, 0.8)) -> dict:
    """The GGUF read back (`export`, a TorchBackend) against its source on the standard text and chat prompts."""
    import numpy as np

    from ..bench import greedy_tokens
    from ..eval_text import standard_text, token_nll, windows

    lo, hi = span
    ids = source.encode(standard_text())[:verify_tokens]
    nll = {"source": 0.0, "export": 0.0}
    top1, count, max_diff, scale = 0, 0, 0.0, 0.0
    parts = windows(ids, 512)
    for i, w in enumerate(parts):
        ctx.check_cancelled()
        ctx.progress(lo + (hi - lo) * 0.7 * i / max(len(parts), 1), f"verify: standard text, window {i + 1}/"
                     f"{len(parts)}")
        a, b = np.asarray(source.logits(w))[:-1], np.asarray(export.logits(w))[:-1]
        nll["source"] += token_nll(a, w[1:])
        nll["export"] += token_nll(b, w[1:])
        top1 += int((a.argmax(1) == b.argmax(1)).sum())
        count += len(w) - 1
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        scale = max(scale, float(np.abs(a).max()))
    out = {}
    if count:
        out.update(ppl_source=float(np.exp(nll["source"] / count)), ppl=float(np.exp(nll["export"] / count)),
                   top1_agreement=top1 / count, max_logit_diff=max_diff, logit_scale=scale, text_tokens=count)
        out["ppl_ratio"] = out["ppl"] / out["ppl_source"]
    ctx.progress(lo + (hi - lo) * 0.75, "verify: first reply token of 16 chat prompts")
    prompts = [source.chat_ids(p) for p in agreement_prompts()]
    first = [t[:1] for t in greedy_tokens(source, prompts, 1)]
    out["first_token_agreement"] = sum(int(x == y[:1]) for x, y in zip(first, greedy_tokens(export, prompts, 1))) \
        / len(prompts)
    answer, _, _ = export.generate(export.chat_ids(CHECK_PROMPT), 24, stop_at_eos=True)
    out["answer"] = export.decode(answer).strip()
    return out


def run(ctx, config: GgufConfig) -> None:
    from ..bench import TorchBackend
    from ..loading import load_tokenizer
    from ..scoring import answerer

    out_id = config.output_id()
    if ctx.store.has_model(out_id):
        raise InvalidInput(f"a model named '{out_id}' already exists; choose another output name")
    t0 = time.perf_counter()
    source = ctx.store.get_model(config.model_id)
    ctx.progress(0.02, "load: preparing the source model")
    src = merged_source(ctx, source)
    folder = ctx.workdir / "export"
    folder.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.1, f"convert: writing the {config.gguf_type} GGUF")
    pre = tokenizer_pre(ctx.store, source)
    facts = write_gguf(src, folder / GGUF_FILE, config.gguf_type, name=out_id, pre=pre, log=ctx.log,
                       check_cancelled=ctx.check_cancelled)
    try:
        (folder / MODELFILE).write_text(modelfile(load_tokenizer(src), system=config.system_prompt),
                                        encoding="utf-8")
        ctx.log(f"gguf: tokenizer pre-tokenizer '{pre}'; Ollama Modelfile written (ollama create NAME -f Modelfile)")
    except InvalidInput as err:  # the GGUF is fine; Ollama then needs a TEMPLATE written by hand
        ctx.log(f"gguf: tokenizer pre-tokenizer '{pre}'; no Modelfile: {err}", level="warning")
    size = facts["size_bytes"]
    source_size = source.size_bytes or 0
    ctx.metric("size_mb", size / 1e6)
    ctx.summary(gguf_type=config.gguf_type, size_mb=round(size / 1e6, 1),
                size_ratio=round(size / source_size, 3) if source_size and source.format == ModelFormat.HF else None)

    ctx.progress(0.3, "verify: reading the GGUF back with transformers' GGUF loader")
    reference, export = TorchBackend(str(src), threads=config.threads), TorchBackend(str(folder))
    result = compare(ctx, reference, export, config.verify_tokens)
    for name, value in result.items():
        if isinstance(value, (int, float)):
            ctx.metric(name, value)
    ctx.summary(answer=result["answer"][:80], first_token_agreement=round(result["first_token_agreement"], 3),
                **({"ppl": round(result["ppl"], 3), "ppl_ratio": round(result["ppl_ratio"], 4),
                    "top1_agreement": round(result["top1_agreement"], 4),
                    "max_logit_diff": round(result["max_logit_diff"], 4)} if "ppl" in result else {}))
    ctx.log(f"verify: '{CHECK_PROMPT}' → {result['answer']!r}; first-token agreement "
            f"{result['first_token_agreement']:.0%}" + (f"; perplexity ×{result['ppl_ratio']:.4f}, top-1 agreement "
                                                       f"{result['top1_agreement']:.1%}, largest logit difference "
                                                       f"{result['max_logit_diff']:.3g}" if "ppl" in result else ""))
    if config.task:
        ctx.log(f"first-token agreement on the general check prompts: {result['first_token_agreement']:.0%} "
                "(context only: this export is judged on its task)")
        check_task_retention(ctx, config, answerer(reference.model, reference.tokenizer),
                             answerer(export.model, export.tokenizer), folder)
    else:
        check_agreement(result, config.min_agreement, folder)
    ctx.progress(0.98, "write: registering the GGUF export")
    publish_model(ctx.store, ctx.settings.models_dir, folder, out_id, ModelFormat.GGUF, source, ctx.run_id,
                  params=source.params, note=f"gguf {config.gguf_type}")
    ctx.log(f"registered '{out_id}' (gguf {config.gguf_type}, {size / 1e6:.1f} MB): "
            f"{ctx.settings.models_dir / out_id / GGUF_FILE}")
    ctx.summary(output=out_id)
    ctx.metric("total_s", time.perf_counter() - t0)
    ctx.progress(1.0, "done")
