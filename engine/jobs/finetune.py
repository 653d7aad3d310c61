"""Job `finetune`: LoRA or full fine-tuning with HF Trainer + peft, held-out eval before and after, adapters and
merged models registered with lineage. Runs in a worker, or data-parallel under torchrun (see `train`)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..errors import InvalidInput
from ..configs import AdapterSetConfig, EvaluateConfig, FineTuneConfig
from ..exports import publish_model
from ..training import (TrainingSession, build_model, count_params, prepare_data, save_for_inference,
                        set_member_config)
from .context import PartContext, Plan, Span
from ..records import ModelFormat

CONFIG = FineTuneConfig


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def evaluate_all(ctx, trainer, model, tokenizer, data, config, label: str, on_eval_loss=None) -> dict:
    """Eval loss and the generation score on the held-out split; stored as `<metric>_<label>`. `ctx`'s progress
    bar is this stage's own (a phase of the run's Plan). `on_eval_loss(seconds)` hears how long the loss took."""
    results = {}
    ctx.progress(0.0, f"eval ({label}): loss")
    t0 = time.perf_counter()
    logged = last_step_eval_loss(trainer) if label == "after" else None
    if logged is not None:  # the Trainer evaluated at its last step: the same weights on the same split
        ctx.log(f"eval ({label}): loss {logged:.4f}, as evaluated at step {trainer.state.global_step}")
        results[f"eval_loss_{label}"] = logged
    else:
        results[f"eval_loss_{label}"] = float(trainer.evaluate()["eval_loss"])
        if on_eval_loss is not None:
            on_eval_loss(time.perf_counter() - t0)
    if config.eval_max_examples and data.eval_conversations and _is_main_process():
        results.update(score_held_out(ctx, model, tokenizer, data.eval_conversations, config, label))
    for name, value in results.items():
        ctx.metric(name, value)
    return results


def last_step_eval_loss(trainer) -> float | None:
    """The eval loss the Trainer logged at its last optimizer step (when max_steps is a multiple of eval_steps),
    else None."""
    step = trainer.state.global_step
    return next((float(e["eval_loss"]) for e in reversed(trainer.state.log_history)
                 if "eval_loss" in e and e.get("step") == step), None) if step else None


def score_held_out(ctx, model, tokenizer, conversations: list, config, label: str) -> dict:
    """{"score_<label>": …}: greedy answers to the first eval_max_examples held-out conversations, scored."""
    from ..scoring import score_by_generation

    result = score_by_generation(
        model, tokenizer, conversations[:config.eval_max_examples], config.score, config.eval_max_new_tokens,
        on_batch=lambda done, total: (ctx.check_cancelled(),
                                      ctx.progress(done / total, f"eval ({label}): scored {done}/{total}")))
    ctx.log(f"{label} score ({result.mode} match): {result.correct}/{result.total}")
    for pred, ref, ok in result.samples[:3]:
        ctx.log(f"  {'ok ' if ok else 'BAD'} got {pred[:120]!r} want {ref[:120]!r}")
    return {f"score_{label}": result.score}


def run(ctx, config: FineTuneConfig) -> None:
    import torch
    from transformers import set_seed

    from ..loading import load_tokenizer

    t_start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    base = ctx.store.get_model(config.model_id)
    if base.format != ModelFormat.HF:
        raise InvalidInput(f"'{base.id}' is a {base.format} model; fine-tune a full model (its base or a merged one).")
    set_seed(config.seed)
    if config.backend == "olive":
        return run_on_olive(ctx, config, base, t_start)
    ctx.progress(0.01, "loading tokenizer and data")
    tokenizer = load_tokenizer(base.path, pad=True)
    data = prepare_data(config, tokenizer)
    ctx.log(f"data: {len(data.train)} train / {len(data.eval)} eval examples ({data.shape}); "
            f"{data.truncated} truncated to {config.max_length} tokens")
    ctx.progress(0.02, "loading model")
    model = build_model(config, base.path)
    trainable, total = count_params(model)
    ctx.metric("trainable_params", trainable)
    ctx.summary(trainable_pct=round(100 * trainable / total, 3), train_examples=len(data.train))
    ctx.log(f"{config.method}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f} %)")

    # The bar and the ETA follow each stage's own pace (engine/jobs/context.py Plan): scoring a held-out example
    # takes a fraction of an optimizer step, so the pace of scoring says little about training's. Training's pace
    # is timed on one batch before the "before" scoring starts, so the ETA holds from the first minutes.
    scored = min(config.eval_max_examples, len(data.eval_conversations or []))
    steps = config.optimizer_steps(len(data.train))
    scores_before = config.resume_from_run is None and config.score_before
    plan = Plan(ctx, {"before": scored + 1 if scores_before else 0, "train": steps, "after": scored + 1},
                same={"after": "before"})  # +1: the eval loss
    session = TrainingSession(plan.span("train"), config, model, tokenizer, data)
    ctx.stage("timing one training step")
    plan.guess["train"] = session.time_step()
    ctx.log(f"one optimizer step takes about {plan.guess['train']:.2f} s here ({steps} steps to go)")

    def add_evals(seconds: float) -> None:  # training pauses for the same eval loss every eval_steps steps
        if data.eval and config.eval_steps:
            plan.guess["train"] += seconds * (steps // config.eval_steps) / max(steps, 1)

    before = {}
    if scores_before:
        before = evaluate_all(plan.span("before"), session.trainer, model, tokenizer, data, config, "before",
                              add_evals)
    elif session.resume_from is not None:  # the base numbers were measured by the run we continue
        old = ctx.store.get_run(config.resume_from_run).summary
        before = {k: v for k, v in old.items() if k.endswith("_before")}
    ctx.summary(**{k: round(v, 4) for k, v in before.items()})
    session.train()
    trainer = session.trainer

    after = evaluate_all(plan.span("after"), trainer, model, tokenizer, data, config, "after")
    ctx.summary(**{k: round(v, 4) for k, v in after.items()})
    if _is_main_process():
        ctx.progress(0.98, "saving")
        save_outputs(ctx, config, base, model, tokenizer)
    ctx.summary(wall_s=round(time.perf_counter() - t_start, 1))


def run_on_olive(ctx, config: FineTuneConfig, base, t_start: float) -> None:
    """The Olive backend (engine/olive.py) on our split of the data, then the same held-out score before
    and after, and the adapter (and merged model) registered as our backend registers them."""
    from peft import PeftModel

    from ..loading import load_model, load_tokenizer
    from ..olive import train_with_olive
    from ..training import split_conversations

    tokenizer = load_tokenizer(base.path, pad=True)
    _, train_conv, eval_conv = split_conversations(config)
    scored = [c for c in eval_conv if isinstance(c, list)] if config.eval_max_examples else []
    ctx.summary(train_examples=len(train_conv))
    ctx.log(f"data: {len(train_conv)} train / {len(eval_conv)} eval examples; training with Microsoft Olive")
    adapter = train_with_olive(Span(ctx, 0.02, 0.8), config, base, train_conv)
    ctx.progress(0.8, "loading the base and Olive's adapter")
    model = load_model(base.path)
    if scored and config.score_before:
        ctx.summary(**score_held_out(Span(ctx, 0.8, 0.89), model, tokenizer, scored, config, "before"))
    model = PeftModel.from_pretrained(model, str(adapter))
    if scored:
        ctx.summary(**score_held_out(Span(ctx, 0.89, 0.97), model, tokenizer, scored, config, "after"))
    ctx.progress(0.98, "saving")
    save_outputs(ctx, config, base, model, tokenizer)
    ctx.summary(wall_s=round(time.perf_counter() - t_start, 1))


def _publish(ctx, folder_tmp: Path, model_id: str, fmt: str, parent_id: str) -> None:
    publish_model(ctx.store, ctx.settings.models_dir, folder_tmp, model_id, fmt, ctx.store.get_model(parent_id),
                  ctx.run_id)
    ctx.log(f"registered '{model_id}' ({fmt})")


def output_names(ctx, config: FineTuneConfig) -> tuple[str, str]:
    name = config.output_name or f"{config.model_id}-{config.method}-run{ctx.run_id}"
    return name, f"{name}-merged"


def save_outputs(ctx, config: FineTuneConfig, base, model, tokenizer) -> None:
    name, merged_name = output_names(ctx, config)
    for model_id in (name, merged_name) if config.merge and config.method != "full" else (name,):
        if ctx.store.has_model(model_id):
            raise InvalidInput(f"a model named '{model_id}' already exists; choose another output name")
    tmp = ctx.workdir / f"{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    save_for_inference(model, tokenizer, tmp)
    _publish(ctx, tmp, name, ModelFormat.HF if config.method == "full" else ModelFormat.ADAPTER, base.id)
    if config.merge and config.method != "full":
        if config.method == "qlora":  # merged into the full-precision base, not into the 4-bit copy QLoRA trained on
            from peft import PeftModel

            from ..loading import load_model

            model = PeftModel.from_pretrained(load_model(base.path), ctx.store.get_model(name).path)
        merged = model.merge_and_unload()
        tmp = ctx.workdir / f"{merged_name}.partial"
        save_for_inference(merged, tokenizer, tmp)
        _publish(ctx, tmp, merged_name, ModelFormat.HF, base.id)


SET_COLUMNS = ("adapter", "task", "score_before", "score_after", "ci_low", "ci_high", "eval_loss_after",
               "train_examples", "wall_s")


def run_set(ctx, config: AdapterSetConfig) -> None:
    """Job `adapter_set`: each adapter by the fine-tune recipe (its own folder and registered adapter), then, when it
    names a task, the adapter — and once per task its base — scored on that task by the evaluate recipe (the task's
    scorer, a 95 % interval). The rows gather in the summary as adapters finish."""
    from . import evaluate

    t0 = time.perf_counter()
    rows, base_scores, n = [], {}, len(config.adapters)
    for i, spec in enumerate(config.adapters):
        ctx.check_cancelled()
        started = time.perf_counter()
        scored = bool(spec.task and config.eval_max_examples)
        # the bar: training takes most of each adapter's share; the scoring after it the rest
        lo, hi = i / n, (i + 1) / n
        split = lo + 0.8 * (hi - lo) if scored else hi
        part = PartContext(ctx, spec.name, lo, split, {})
        run(part, set_member_config(ctx.store, config, spec))
        row = {"adapter": spec.name, "task": spec.task or "(held-out split)", **part.values}
        if scored:
            score_on = [(spec.name, "after")]
            if config.score_before and spec.task not in base_scores:
                score_on.insert(0, (config.model_id, "before"))
            for j, (model_id, when) in enumerate(score_on):
                scoring = PartContext(ctx, f"{spec.name}-{when}-{spec.task}", split + j * (hi - split) / len(score_on),
                                      split + (j + 1) * (hi - split) / len(score_on), {})
                evaluate.run(scoring, EvaluateConfig(model_id=model_id, task=spec.task, backend="transformers",
                                                     limit=config.eval_max_examples, threads=config.threads))
                if when == "before":
                    base_scores[spec.task] = scoring.values["score"]
                else:
                    row.update(score_after=scoring.values["score"], ci_low=scoring.values["ci_low"],
                               ci_high=scoring.values["ci_high"])
            row["score_before"] = base_scores.get(spec.task)
        row["wall_s"] = round(time.perf_counter() - started, 1)
        rows.append({k: row.get(k) for k in SET_COLUMNS})
        ctx.summary(adapters=rows, adapters_done=len(rows))
        ctx.log(f"{spec.name}: {spec.task or 'held-out'} score {row.get('score_before')} → {row.get('score_after')} "
                f"in {row['wall_s']:.0f} s")
    ctx.summary(base=config.model_id, wall_s=round(time.perf_counter() - t0, 1))
    ctx.progress(1.0, "done")
