"""Job `evaluate`: a model's score on a task. Greedy answers to the task's evaluation set (an ONNX export answers
itself; a full model or adapter answers on its fastest verified export when it has one, else on transformers,
batched), each scored against its reference; the mean with a 95 % interval, and every example as a JSONL file."""
from __future__ import annotations

import json
import time

from ..configs import EvaluateConfig
from ..scoring import answerer_for, judge_for
from ..tasks import Task, load_examples, score_answers


def run(ctx, config: EvaluateConfig) -> None:
    t0 = time.perf_counter()
    task = Task.model_validate_json(ctx.store.task_json(config.task))
    model = ctx.store.get_model(config.model_id)
    examples = load_examples(task, config.limit)
    ctx.progress(0.02, "loading the model")
    backend, answer = answerer_for(ctx.store, model, config.backend, config.threads)
    judge = judge_for(ctx.store, task)
    judged = f", graded by the model '{task.judge_model}' (an LLM judge's opinion)" if judge else ""
    ctx.log(f"{len(examples)} examples of '{task.name}' ({task.scorer} scorer{judged}) on {backend}")
    ctx.summary(task=task.name, scorer=task.scorer, backend=backend, examples=len(examples),
                task_config=task.model_dump())  # the task as it was scored, should it change later

    def on_batch(done: int) -> None:
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.9 * done / len(examples), f"scored {done}/{len(examples)}")

    result = score_answers(task, examples, answer, on_batch, judge=judge)
    path = ctx.workdir / "predictions.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result["rows"]), encoding="utf-8")
    ctx.artifact("predictions", path)
    mean, lo, hi = result["score"], result["ci_low"], result["ci_high"]
    ctx.metric("task_score", mean)
    ctx.summary(score=round(mean, 4), ci_low=round(lo, 4), ci_high=round(hi, 4), passed=result["passed"],
                scoring_s=round(result["seconds"], 1), wall_s=round(time.perf_counter() - t0, 1))
    ctx.log(f"{task.name}: {mean:.3f} (95 % interval {lo:.3f}–{hi:.3f}) on {len(result['rows'])} examples in "
            f"{result['seconds']:.0f} s")
    ctx.progress(1.0, "done")
