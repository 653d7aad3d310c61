"""Job `distill` (stage 2): train a student on the teacher's data with the KD loss, register it, then compare
teacher and student on the held-out part (perplexity of the teacher's answers, greedy agreement), on general text,
in size and in decode speed."""
from __future__ import annotations

import os
import shutil
import time

from ..errors import InvalidInput
from ..configs import DistillConfig, DistillSweepConfig
from ..distill import (check_same_tokenizer, decode_tokens_per_s, decoder_layers, derive_student, greedy_tokens,
                       make_distill_trainer, perplexity, response_nll, select_layers, teacher_top_k)
from ..exports import publish_model
from ..scoring import split_conversation
from ..training import TrainingSession, count_params, prepare_data, save_for_inference
from .context import PartContext, Span
from ..records import ModelFormat

CONFIG = DistillConfig
# The run's bar, in shares of its time measured on the default recipe (request_to_json, 10 of 30 layers, 6 epochs,
# 2 cores): layer importance 4.1 min, the teacher's cached answers 2.3, training ~15, the comparison after ~6.
IMPORTANCE_END, CACHE_SHARE, TRAINING_END = 0.15, 0.07, 0.8


def load_models(ctx, config: DistillConfig):
    from ..loading import load_model, load_tokenizer

    teacher_rec = ctx.store.get_model(config.teacher_model_id)
    tokenizer = load_tokenizer(teacher_rec.path, pad=True)
    teacher = load_model(teacher_rec.path).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher_rec, teacher, tokenizer


def padded_batches(dataset, count: int, pad_id: int, batch_size: int = 8) -> list:
    """(input_ids, attention_mask, labels) tensors of the first `count` tokenized examples, right-padded."""
    import torch

    rows = dataset[:count]
    batches = []
    for start in range(0, len(rows["input_ids"]), batch_size):
        ids, labels = rows["input_ids"][start:start + batch_size], rows["labels"][start:start + batch_size]
        width = max(len(x) for x in ids)
        batches.append((torch.tensor([x + [pad_id] * (width - len(x)) for x in ids]),
                        torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
                        torch.tensor([x + [-100] * (width - len(x)) for x in labels])))
    return batches


def make_student(ctx, config: DistillConfig, teacher_rec, teacher, tokenizer, data):
    """The student: the teacher's most important layers (measured), evenly spaced or named ones, or a registered
    model sharing the teacher's tokenizer."""
    from ..loading import load_model, load_tokenizer

    if config.student == "existing":
        student_rec = ctx.store.get_model(config.student_model_id)
        check_same_tokenizer(tokenizer, load_tokenizer(student_rec.path), teacher_rec.id, student_rec.id)
        return load_model(student_rec.path)
    n = len(decoder_layers(teacher))
    if config.measures_importance():
        keep = min(config.keep_layers, n)
        batches = padded_batches(data.train, config.calibration_examples, tokenizer.pad_token_id)
        ctx.stage(f"measuring layer importance on {config.calibration_examples} training examples")
        layers, rounds = select_layers(teacher, batches, keep, lambda r, left: ctx.progress(
            0.01 + (IMPORTANCE_END - 0.01) * (n - left) / max(n - keep, 1),
            f"layer importance: round {r}, {left} layers left"), ctx.check_cancelled)
        even = config.model_copy(update={"layer_selection": "even"}).layer_indices(n)
        for r, costs in enumerate(rounds, 1):
            ctx.log(f"round {r}: loss rise without each layer: " + ", ".join(f"{i}:{c:.3f}" for i, c in costs.items()))
        ctx.summary(layers=layers, importance_rounds=len(rounds))
        ctx.log(f"keeping the {keep} most important layers {layers} (evenly spaced would be {even})")
    else:
        layers = config.layer_indices(n)
        ctx.summary(layers=layers)
    ctx.log(f"student keeps teacher layers {layers}")
    return derive_student(teacher, layers)


def cached_teacher(ctx, config: DistillConfig, teacher, tokenizer, data) -> dict | None:
    """The teacher's top-k answer on every training and held-out example, computed once (None: the KD term is off,
    or the teacher runs every step). A sweep computes it for its first student and shares it."""
    if config.alpha == 0 or config.teacher_top_k == 0:  # run() gives it no share of the bar then
        return None
    shared = getattr(ctx, "shared", None)
    key = ("teacher_top_k", config.teacher_top_k, config.temperature)
    if shared is not None and key in shared:
        return shared[key]
    t0 = time.perf_counter()
    batches = [*padded_batches(data.train, len(data.train), tokenizer.pad_token_id, config.batch_size),
               *padded_batches(data.eval, len(data.eval), tokenizer.pad_token_id, config.batch_size)]
    ctx.stage(f"the teacher's top-{config.teacher_top_k} answers on {len(data.train) + len(data.eval)} examples")
    cache = teacher_top_k(teacher, batches, config.teacher_top_k, config.temperature, ctx.check_cancelled,
                          lambda n: ctx.progress(n / len(batches), f"teacher's answers: batch {n}/{len(batches)}"))
    positions = sum(len(v[2]) for v in cache.values())
    tail = sum(float(v[2].exp().sum()) for v in cache.values()) / max(positions, 1)
    ctx.log(f"teacher's top-{config.teacher_top_k} answers at {positions} response positions in "
            f"{time.perf_counter() - t0:.0f} s; mean probability outside the top {config.teacher_top_k} at "
            f"T={config.temperature:g}: {tail:.4f}")
    ctx.summary(teacher_tail_mass=round(tail, 5))
    if shared is not None:
        shared[key] = cache
    return cache


def evaluate(ctx, config, teacher, student, tokenizer, data) -> dict:
    """Teacher and student side by side; also stored as metrics of the run."""
    from ..eval_text import standard_text_nll

    ctx.progress(0.8, "eval: perplexity of the teacher's held-out answers")
    pad = tokenizer.pad_token_id
    nll_t = response_nll(teacher, data.eval, config.batch_size, pad)
    nll_s = response_nll(student, data.eval, config.batch_size, pad)
    results = {"heldout_ppl_teacher": perplexity(nll_t), "heldout_ppl_student": perplexity(nll_s)}
    results["ppl_retention"] = results["heldout_ppl_teacher"] / results["heldout_ppl_student"]
    prompts = [split_conversation(c)[0] for c in data.eval_conversations[:config.eval_max_examples]]
    if prompts:
        ctx.progress(0.82, f"eval: greedy agreement on {len(prompts)} prompts")
        want = greedy_tokens(teacher, tokenizer, prompts, config.agreement_tokens)
        got = greedy_tokens(student, tokenizer, prompts, config.agreement_tokens)
        results["agreement"] = sum(a == b for a, b in zip(want, got)) / len(prompts)
    if config.general_ppl_tokens:
        ctx.progress(0.85, "eval: general perplexity (Python's documentation text)")
        results["general_ppl_teacher"] = perplexity(standard_text_nll(teacher, tokenizer, config.general_ppl_tokens))
        results["general_ppl_student"] = perplexity(standard_text_nll(student, tokenizer, config.general_ppl_tokens))
    if config.task:
        results.update(task_scores(ctx, config, teacher, student, tokenizer))
    ctx.progress(0.97, "eval: decode speed")
    results["decode_tok_s_teacher"] = decode_tokens_per_s(teacher, tokenizer)
    results["decode_tok_s_student"] = decode_tokens_per_s(student, tokenizer)
    results["decode_speedup"] = results["decode_tok_s_student"] / results["decode_tok_s_teacher"]
    for name, value in results.items():
        ctx.metric(name, value)
    return results


def task_scores(ctx, config: DistillConfig, teacher, student, tokenizer) -> dict:
    """Teacher and student scored on the config's task (greedy answers to its evaluation set); each one's answers
    are kept as a predictions artifact."""
    import json

    from ..scoring import answerer, judge_for
    from ..tasks import Task, load_examples, score_answers

    task = Task.model_validate_json(ctx.store.task_json(config.task))
    examples = load_examples(task, config.task_limit)
    judge = judge_for(ctx.store, task)
    out = {}
    shared = getattr(ctx, "shared", None)  # a sweep scores its teacher once for all its students
    for who, model in (("teacher", teacher), ("student", student)):
        if who == "teacher" and shared is not None and "teacher" in shared:
            result = shared["teacher"]
            ctx.log(f"the teacher's score on {task.name}, measured for an earlier student: {result['score']:.3f}")
        else:
            lo = 0.87 if who == "teacher" else 0.92
            result = score_answers(task, examples, answerer(model, tokenizer), lambda done, _w=who, _lo=lo: (
                ctx.check_cancelled(), ctx.progress(_lo + 0.05 * done / len(examples),
                                                    f"eval: {_w} on '{task.name}' {done}/{len(examples)}")),
                                   judge=judge)
            if who == "teacher" and shared is not None:
                shared["teacher"] = result
            ctx.log(f"{who} on {task.name}: {result['score']:.3f} ({result['ci_low']:.3f}–{result['ci_high']:.3f}) "
                    f"in {result['seconds']:.0f} s")
        path = ctx.workdir / f"predictions-{who}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result["rows"]), encoding="utf-8")
        ctx.artifact("predictions", path)
        out.update({f"task_score_{who}": result["score"], f"task_ci_low_{who}": result["ci_low"],
                    f"task_ci_high_{who}": result["ci_high"]})
    out["task_examples"] = len(examples)
    out["task_retention"] = out["task_score_student"] / out["task_score_teacher"] if out["task_score_teacher"] else 0.0
    return out


def run(ctx, config: DistillConfig) -> None:
    import torch
    from transformers import set_seed

    t_start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    ctx.progress(0.01, "loading the teacher and the data")
    teacher_rec, teacher, tokenizer = load_models(ctx, config)
    data = prepare_data(config, tokenizer)
    ctx.log(f"data: {len(data.train)} train / {len(data.eval)} held-out examples ({data.shape})")
    student = make_student(ctx, config, teacher_rec, teacher, tokenizer, data)
    t_params, s_params = count_params(teacher)[1], count_params(student)[1]
    ctx.summary(teacher_params_m=round(t_params / 1e6, 1), student_params_m=round(s_params / 1e6, 1),
                params_ratio=round(s_params / t_params, 3), alpha=config.alpha)

    start = IMPORTANCE_END if config.measures_importance() else 0.02
    cache = cached_teacher(Span(ctx, start, start + CACHE_SHARE), config, teacher, tokenizer, data)
    start += CACHE_SHARE if cache is not None else 0
    trainer_cls = make_distill_trainer(teacher, config.alpha, config.temperature, cache)
    # training fills the bar up to 80 %; the comparison after it (task scores above all) takes the rest
    session = TrainingSession(Span(ctx, start, TRAINING_END), config, student, tokenizer, data,
                              trainer_cls=trainer_cls)
    session.train()
    results = evaluate(ctx, config, teacher, student, tokenizer, data)
    ctx.summary(**{k: round(v, 4) for k, v in results.items()})
    if int(os.environ.get("RANK", "0")) == 0:
        ctx.progress(0.99, "saving the student")
        save_student(ctx, config, teacher_rec, student, tokenizer)
    ctx.summary(wall_s=round(time.perf_counter() - t_start, 1))


def save_student(ctx, config: DistillConfig, teacher_rec, student, tokenizer) -> None:
    name = config.output_name or f"{teacher_rec.id}-student-run{ctx.run_id}"
    if ctx.store.has_model(name):
        raise InvalidInput(f"a model named '{name}' already exists; choose another output name")
    tmp = ctx.workdir / f"{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    save_for_inference(student, tokenizer, tmp)
    publish_model(ctx.store, ctx.settings.models_dir, tmp, name, ModelFormat.HF, teacher_rec, ctx.run_id,
                  note=f"distilled on {config.train_path}")
    ctx.log(f"registered student '{name}'")


SWEEP_COLUMNS = ("layers", "student", "student_params_m", "params_ratio", "decode_speedup", "task_score_student",
                 "task_ci_low_student", "task_ci_high_student", "task_retention", "train_s", "wall_s")


def run_sweep(ctx, config: DistillSweepConfig) -> None:
    """One student per size, each by the distill recipe (its own folder, its own registered model), the teacher
    scored on the task once; the students' rows gathered in the summary as they finish."""
    t0 = time.perf_counter()
    teacher = ctx.store.get_model(config.teacher_model_id)
    prefix = config.output_name or f"{teacher.id}-student-run{ctx.run_id}"
    shared, rows = {}, []
    for i, size in enumerate(config.sizes):
        ctx.check_cancelled()
        part = PartContext(ctx, f"{size} layers", i / len(config.sizes), (i + 1) / len(config.sizes), shared)
        run(part, config.student_config(size, f"{prefix}-{size}l"))
        values = part.values
        rows.append({"layers": size, "student": f"{prefix}-{size}l",
                     **{k: values[k] for k in SWEEP_COLUMNS[2:] if k in values}})
        ctx.summary(students=rows, teacher_params_m=values.get("teacher_params_m"),
                    task_score_teacher=values.get("task_score_teacher"),
                    decode_tok_s_teacher=values.get("decode_tok_s_teacher"))
        ctx.log(f"{size} layers: {values.get('student_params_m')} M params, task retention "
                f"{values.get('task_retention', 0):.1%}, decode ×{values.get('decode_speedup', 0):.2f}")
    smallest = [r for r in rows if r.get("task_retention", 0) >= 0.9]
    ctx.summary(smallest_at_90=min(smallest, key=lambda r: r["layers"])["student"] if smallest else None,
                wall_s=round(time.perf_counter() - t0, 1))
    ctx.progress(1.0, "done")
