"""Job `distill` (stage 2): train a student on the teacher's data with the KD loss, register it, then compare
teacher and student on the held-out part (perplexity of the teacher's answers, greedy agreement), on general text,
in size and in decode speed."""
from __future__ import annotations

import os
import shutil
import time

from ..errors import InvalidInput
from ..configs import DistillConfig
from ..distill import (check_same_tokenizer, decode_tokens_per_s, derive_student, greedy_tokens,
                       make_distill_trainer, perplexity, response_nll)
from ..exports import publish_model
from ..scoring import split_conversation
from ..training import TrainingSession, count_params, prepare_data
from ..records import ModelFormat

CONFIG = DistillConfig


def load_models(ctx, config: DistillConfig):
    from ..loading import load_model, load_tokenizer

    teacher_rec = ctx.store.get_model(config.teacher_model_id)
    tokenizer = load_tokenizer(teacher_rec.path, pad=True)
    teacher = load_model(teacher_rec.path).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if config.student == "derived":
        layers = config.layer_indices(teacher.config.num_hidden_layers)
        ctx.log(f"student keeps teacher layers {layers}")
        student = derive_student(teacher, layers)
    else:
        student_rec = ctx.store.get_model(config.student_model_id)
        check_same_tokenizer(tokenizer, load_tokenizer(student_rec.path), teacher_rec.id, student_rec.id)
        student = load_model(student_rec.path)
    return teacher_rec, teacher, student, tokenizer


def evaluate(ctx, config, teacher, student, tokenizer, data) -> dict:
    """Teacher and student side by side; also stored as metrics of the run."""
    from ..eval_text import standard_text_nll

    ctx.stage("eval: perplexity of the teacher's held-out answers")
    pad = tokenizer.pad_token_id
    nll_t = response_nll(teacher, data.eval, config.batch_size, pad)
    nll_s = response_nll(student, data.eval, config.batch_size, pad)
    results = {"heldout_ppl_teacher": perplexity(nll_t), "heldout_ppl_student": perplexity(nll_s)}
    results["ppl_retention"] = results["heldout_ppl_teacher"] / results["heldout_ppl_student"]
    prompts = [split_conversation(c)[0] for c in data.eval_conversations[:config.eval_max_examples]]
    if prompts:
        ctx.stage(f"eval: greedy agreement on {len(prompts)} prompts")
        want = greedy_tokens(teacher, tokenizer, prompts, config.agreement_tokens)
        got = greedy_tokens(student, tokenizer, prompts, config.agreement_tokens)
        results["agreement"] = sum(a == b for a, b in zip(want, got)) / len(prompts)
    if config.general_ppl_tokens:
        ctx.stage("eval: general perplexity (Python's documentation text)")
        results["general_ppl_teacher"] = perplexity(standard_text_nll(teacher, tokenizer, config.general_ppl_tokens))
        results["general_ppl_student"] = perplexity(standard_text_nll(student, tokenizer, config.general_ppl_tokens))
    ctx.stage("eval: decode speed")
    results["decode_tok_s_teacher"] = decode_tokens_per_s(teacher, tokenizer)
    results["decode_tok_s_student"] = decode_tokens_per_s(student, tokenizer)
    results["decode_speedup"] = results["decode_tok_s_student"] / results["decode_tok_s_teacher"]
    for name, value in results.items():
        ctx.metric(name, value)
    return results


def run(ctx, config: DistillConfig) -> None:
    import torch
    from transformers import set_seed

    t_start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    ctx.progress(0.01, "loading teacher, student and data")
    teacher_rec, teacher, student, tokenizer = load_models(ctx, config)
    data = prepare_data(config, tokenizer)
    ctx.log(f"data: {len(data.train)} train / {len(data.eval)} held-out examples ({data.shape})")
    t_params, s_params = count_params(teacher)[1], count_params(student)[1]
    ctx.summary(teacher_params_m=round(t_params / 1e6, 1), student_params_m=round(s_params / 1e6, 1),
                params_ratio=round(s_params / t_params, 3), alpha=config.alpha)

    trainer_cls = make_distill_trainer(teacher, config.alpha, config.temperature)
    session = TrainingSession(ctx, config, student, tokenizer, data, trainer_cls=trainer_cls)
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
    student.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    publish_model(ctx.store, ctx.settings.models_dir, tmp, name, ModelFormat.HF, teacher_rec, ctx.run_id,
                  note=f"distilled on {config.train_path}")
    ctx.log(f"registered student '{name}'")
