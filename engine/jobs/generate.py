"""Job `generate_data` (distillation stage 1): the teacher answers every prompt in batches; rows are appended to
the run folder as they come (so a resumed run only does the rest), then filtered into a chat dataset."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from ..configs import GenerateDataConfig
from ..data import load_prompts
from ..errors import InvalidInput

CONFIG = GenerateDataConfig
RAW = "raw.jsonl"


def conversation(config: GenerateDataConfig, prompt: str) -> list[dict]:
    messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt.strip() else []
    for shot in config.few_shot:
        messages += [{"role": "user", "content": shot["prompt"]}, {"role": "assistant", "content": shot["response"]}]
    return messages + [{"role": "user", "content": prompt}]


def generate_batch(model, tokenizer, config, prompts: list[dict], stop) -> tuple[list[dict], int]:
    """Sample n answers per prompt; each row says whether the answer was cut off at max_new_tokens."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, ids, scores, **kwargs):
            return torch.full((ids.shape[0],), stop.is_set(), dtype=torch.bool)

    texts = [tokenizer.apply_chat_template(conversation(config, p["prompt"]), add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = ({"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
                if config.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=config.max_new_tokens, num_return_sequences=config.n_per_prompt,
                             pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([_Stop()]),
                             **sampling)
    new = out[:, enc["input_ids"].shape[1]:]
    eos = {tokenizer.eos_token_id, *([model.generation_config.eos_token_id]
                                     if isinstance(model.generation_config.eos_token_id, int)
                                     else (model.generation_config.eos_token_id or []))}
    rows, tokens = [], 0
    for j, seq in enumerate(new.tolist()):
        p = prompts[j // config.n_per_prompt]
        end = next((i for i, t in enumerate(seq) if t in eos), None)
        kept = seq if end is None else seq[:end]
        tokens += len(kept) + (end is not None)
        rows.append({"key": f"{p['id']}#{j % config.n_per_prompt}", "prompt_id": p["id"], "prompt": p["prompt"],
                     "response": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                     "finish": "length" if end is None else "stop"})
    return rows, tokens


def generate_batch_onnx(og_model, config, prompts: list[dict], stop, seed: int) -> tuple[list[dict], int]:
    """The same rows as generate_batch, from an ONNX Runtime GenAI export (one sequence at a time)."""
    from ..configs import GenerationParams

    params = GenerationParams(temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens)
    rows, tokens = [], 0
    for i, p in enumerate(prompts):
        ids = og_model.prompt_ids(conversation(config, p["prompt"]))
        for j in range(config.n_per_prompt):
            out, times = og_model.generate_ids(ids, config.max_new_tokens, params, stop, seed=seed + i * 16 + j)
            tokens += len(times)
            rows.append({"key": f"{p['id']}#{j}", "prompt_id": p["id"], "prompt": p["prompt"],
                         "response": og_model.decode(out).strip(),
                         "finish": "length" if len(out) >= config.max_new_tokens else "stop"})
    return rows, tokens


def apply_filters(config: GenerateDataConfig, rows: list[dict]) -> tuple[list[dict], dict]:
    """Keep the good rows; count what each filter dropped (in this order: empty, cut off, length, regex, JSON,
    duplicates)."""
    pattern = re.compile(config.regex) if config.regex else None
    counts = {"empty": 0, "cut_off": 0, "too_short": 0, "too_long": 0, "regex": 0, "not_json": 0, "duplicate": 0}
    kept, seen = [], set()
    for row in rows:
        text = row["response"]
        reason = None
        if not text.strip():
            reason = "empty"
        elif config.drop_truncated and row["finish"] == "length":
            reason = "cut_off"
        elif len(text) < config.min_chars:
            reason = "too_short"
        elif len(text) > config.max_chars:
            reason = "too_long"
        elif pattern is not None and not pattern.search(text):
            reason = "regex"
        elif config.require_json and not _is_json(text):
            reason = "not_json"
        elif config.dedupe and (row["prompt"], text) in seen:
            reason = "duplicate"
        if reason:
            counts[reason] += 1
            continue
        seen.add((row["prompt"], text))
        kept.append(row)
    return kept, counts


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _read_raw(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill mid-write: everything before it is intact
    return rows


def run(ctx, config: GenerateDataConfig) -> None:
    import torch

    from ..loading import load_causal_lm

    if config.regex:
        try:
            re.compile(config.regex)
        except re.error as exc:
            raise InvalidInput(f"regex {config.regex!r} is not valid: {exc}") from None
    torch.manual_seed(config.seed)
    prompts = load_prompts(config.prompts_path)
    if config.max_prompts:
        prompts = prompts[:config.max_prompts]
    raw_path = ctx.workdir / RAW
    if config.resume_from_run is not None:
        old = ctx.settings.runs_dir / str(config.resume_from_run) / RAW
        if old.exists() and not raw_path.exists():
            shutil.copyfile(old, raw_path)
    rows = _read_raw(raw_path)
    raw_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    done = {r["prompt_id"] for r in rows}
    todo = [p for p in prompts if p["id"] not in done]
    ctx.log(f"{len(prompts)} prompts; {len(done)} already answered, {len(todo)} to do")

    teacher = ctx.store.get_model(config.teacher_model_id)
    export = None
    if config.teacher_backend != "transformers":
        from ..exports import best_export

        export = best_export(ctx.store, teacher.id)
        if export is None and config.teacher_backend == "onnx":
            raise InvalidInput(f"'{teacher.id}' has no verified ONNX export within ×1.05 perplexity: build one in "
                               "the Quantize tab, or choose the transformers backend.")
    ctx.progress(0.01, f"loading teacher {teacher.id}" + (f" (ONNX export {export.id})" if export else ""))
    if export is not None:
        from ..ort_genai import OgModel

        og_model = OgModel(export.path)
        ctx.summary(backend=f"onnxruntime-genai ({export.id})")
        ctx.log(f"teacher backend: onnxruntime-genai export '{export.id}' (the fastest verified one)")
    else:
        model, tokenizer = load_causal_lm(teacher.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        ctx.summary(backend="transformers")
        ctx.log("teacher backend: transformers (no verified ONNX export of the teacher)")
    tokens, t0 = 0, time.perf_counter()
    with open(raw_path, "a", encoding="utf-8") as out:
        for start in range(0, len(todo), config.batch_size):
            ctx.check_cancelled()
            batch = todo[start:start + config.batch_size]
            if export is not None:
                new_rows, n = generate_batch_onnx(og_model, config, batch, ctx.cancel_event,
                                                  config.seed + len(done) + start)
            else:
                new_rows, n = generate_batch(model, tokenizer, config, batch, ctx.cancel_event)
            ctx.check_cancelled()  # a batch stopped by cancel is incomplete: do not keep it
            out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new_rows))
            out.flush()
            rows += new_rows
            tokens += n
            seconds = time.perf_counter() - t0
            finished = len(done) + start + len(batch)
            ctx.progress(0.02 + 0.93 * finished / max(len(prompts), 1), f"{finished}/{len(prompts)} prompts")
            ctx.metric("teacher_tokens_per_s", tokens / seconds, finished)

    kept, dropped = apply_filters(config, rows)
    ctx.log("filters dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()) + f"; kept {len(kept)}")
    if not kept:
        raise InvalidInput("every generated answer was filtered out; loosen the filters or raise max_new_tokens")
    save_dataset(ctx, config, kept)
    seconds = time.perf_counter() - t0
    ctx.summary(prompts=len(prompts), generated=len(rows), kept=len(kept), **{f"dropped_{k}": v for k, v in
                                                                              dropped.items() if v},
                teacher_tokens_per_s=round(tokens / seconds, 1) if tokens else None)


def save_dataset(ctx, config: GenerateDataConfig, rows: list[dict]) -> Path:
    """Write the chat dataset (temp file, then rename) into the workspace and record it as the run's artifact."""
    from ..models import slugify

    name = slugify(config.output_name or f"distill-data-run{ctx.run_id}")
    folder = ctx.settings.home / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}.jsonl"
    tmp = ctx.workdir / f"{final.name}.partial"  # in the run folder until complete (cleaned up if the run dies)
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                              {"role": "assistant", "content": r["response"]}],
                                 "prompt_id": r["prompt_id"]}, ensure_ascii=False) + "\n")
    tmp.rename(final)
    ctx.artifact("dataset", final, model_id=config.teacher_model_id)
    ctx.log(f"dataset {final.name}: {len(rows)} rows")
    return final
