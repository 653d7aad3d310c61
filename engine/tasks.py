"""Tasks: what a user wants their model to do, measured. A task is an evaluation set that is never trained on (chat
examples whose last assistant turn is the reference), a scorer and generation settings. Stored by name; the bundled
example task is registered on first start."""
from __future__ import annotations

import json
import random
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidInput
from .settings import PROJECT_ROOT

SCORERS = ("exact", "json", "json_f1", "contains", "regex", "numeric", "chrf", "judge")
BINARY = {"exact", "json", "contains", "regex", "numeric", "judge"}  # pass/fail; json_f1 and chrf are graded
JUDGE_SYSTEM = ("You are a strict grader. You read a task, its reference answer and a candidate answer, and judge the "
                "candidate by the rubric. Reply with one word: PASS or FAIL.")


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="Name the task is stored under.")
    eval_path: str = Field(min_length=1, description="Evaluation set: chat data (JSONL/JSON/CSV/Parquet) whose last "
                           "assistant turn is the reference. Never train on it.")
    scorer: Literal["exact", "json", "json_f1", "contains", "regex", "numeric", "chrf", "judge"] = Field(
        default="exact", description="exact: same text; json: same JSON value; json_f1: F1 over the JSON object's "
        "fields; contains: the reference appears in the answer; regex: the pattern's first match (group 1 if any) "
        "equals the reference; numeric: the first number within tolerance; chrf: chrF similarity (sacrebleu), 0-1; "
        "judge: another model (judge_model) grades each answer PASS/FAIL by the rubric (an LLM's opinion, labelled "
        "as such).")
    judge_model: str = Field(default="", max_length=200, description="judge scorer: the registered model that "
                             "grades the answers.")
    rubric: str = Field(default="", max_length=4000, description="judge scorer: what a passing answer does, in "
                        "words the judge model reads.")
    ignore_case: bool = Field(default=True, description="exact/contains/regex: compare case-insensitively.")
    pattern: str = Field(default="", max_length=1000, description="regex scorer: what to extract from the answer.")
    tolerance: float = Field(default=0.0, ge=0.0, description="numeric scorer: largest accepted |answer − reference|.")
    system_prompt: str = Field(default="", max_length=20_000, description="System message for every example.")
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Longest answer generated per example.")
    description: str = Field(default="", max_length=2000, description="What the task is, for people.")


BUNDLED = [Task(name="request_to_json", eval_path=str(PROJECT_ROOT / "assets/datasets/request_to_json.eval.jsonl"),
                scorer="json", max_new_tokens=64,
                description="Turn a household request into a JSON object with intent, item, quantity and when "
                            "(assets/datasets/, 100 held-out examples)."),
           Task(name="ticket_label", eval_path=str(PROJECT_ROOT / "assets/datasets/ticket_label.eval.jsonl"),
                scorer="exact", max_new_tokens=8,
                description="Label a customer-support ticket as billing, delivery, refund, login, bug or cancel "
                            "(assets/datasets/, 120 held-out examples).")]


def _normalise(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split())
    return text.lower() if ignore_case else text


def _json(text: str):
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def _number(text: str) -> float | None:
    m = re.search(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?", text)
    return float(m.group(0).replace(",", ".")) if m else None


def score(task: Task, prediction: str, reference: str) -> float:
    """This example's score in [0, 1] (1 = pass for the pass/fail scorers)."""
    kind = task.scorer
    if kind == "judge":
        raise InvalidInput("A judge task is scored by its judge model (score_answers with a judge), not by rule.")
    if kind == "exact":
        return float(_normalise(prediction, task.ignore_case) == _normalise(reference, task.ignore_case))
    if kind == "contains":
        return float(_normalise(reference, task.ignore_case) in _normalise(prediction, task.ignore_case))
    if kind == "json":
        got = _json(prediction)
        return float(got is not None and got == _json(reference))
    if kind == "json_f1":
        got, want = _json(prediction), _json(reference)
        if not isinstance(got, dict) or not isinstance(want, dict):
            return 0.0
        hits = sum(1 for k, v in got.items() if k in want and want[k] == v)
        return 2 * hits / (len(got) + len(want)) if got or want else 1.0
    if kind == "regex":
        m = re.search(task.pattern, prediction, re.IGNORECASE if task.ignore_case else 0)
        found = (m.group(1) if m and m.groups() else m.group(0)) if m else None
        return float(found is not None and _normalise(found, task.ignore_case) == _normalise(reference,
                                                                                              task.ignore_case))
    if kind == "numeric":
        got, want = _number(prediction), _number(reference)
        return float(got is not None and want is not None and abs(got - want) <= task.tolerance)
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(prediction, [reference]).score / 100.0


def interval(scores: list[float], binary: bool, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean score: Wilson's for pass/fail scores, a percentile bootstrap (2,000 resamples)
    for graded ones."""
    from .scoring import wilson_interval

    if not scores:
        return 0.0, 1.0
    if binary:
        return wilson_interval(int(round(sum(scores))), len(scores))
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(sum(rng.choice(scores) for _ in range(n)) / n for _ in range(2000))
    return means[49], means[1949]


def judge_prompt(task: Task, prompt: str, reference: str, prediction: str) -> list[dict]:
    """The conversation the judge model grades one answer in."""
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"Rubric: {task.rubric}\n\nTask: {prompt}\n\nReference answer: {reference}"
                                        f"\n\nCandidate answer: {prediction}\n\nVerdict (PASS or FAIL):"}]


def verdict(reply: str) -> float:
    """1.0 when the judge's reply starts with PASS (or YES), else 0.0."""
    words = re.findall(r"[A-Za-z]+", reply)
    return float(bool(words) and words[0].upper() in {"PASS", "YES"})


def score_answers(task: Task, examples: list[tuple[list[dict], str]], answer, on_batch=None,
                  batch: int = 8, judge=None) -> dict:
    """Every example answered and scored. `answer(prompts, max_new_tokens)` → answers; `on_batch(done)` after each
    batch of `batch` (progress, cancellation); `judge` (an answerer of the task's judge model, engine.scoring.judge_for)
    grades the answers of a judge task. Returns the rows (n, prompt, reference, prediction, score, and the judge's
    reply), the mean score with its 95 % interval, how many passed, and the seconds spent."""
    import time

    if task.scorer == "judge" and judge is None:
        raise InvalidInput(f"Task '{task.name}' is graded by a judge model, and none was given here.")
    t0, rows = time.perf_counter(), []
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        predictions = answer([p for p, _ in chunk], task.max_new_tokens)
        if task.scorer == "judge":
            replies = judge([judge_prompt(task, p[-1]["content"], ref, pred)
                             for (p, ref), pred in zip(chunk, predictions)], 8)
        for i, ((prompt, reference), prediction) in enumerate(zip(chunk, predictions)):
            row = {"n": len(rows) + 1, "prompt": prompt[-1]["content"], "reference": reference,
                   "prediction": prediction}
            if task.scorer == "judge":
                row.update(score=verdict(replies[i]), judge=replies[i])
            else:
                row["score"] = score(task, prediction, reference)
            rows.append(row)
        if on_batch is not None:
            on_batch(len(rows))
    scores = [r["score"] for r in rows]
    lo, hi = interval(scores, task.scorer in BINARY)
    return {"rows": rows, "score": sum(scores) / max(len(scores), 1), "ci_low": lo, "ci_high": hi,
            "passed": sum(s >= 1.0 for s in scores), "seconds": time.perf_counter() - t0}


def compare(rows_a: list[dict], rows_b: list[dict]) -> list[dict]:
    """Two scorings of the same examples side by side (matched by prompt and reference): each example's two answers
    and scores, and what changed from a to b — "fixed" (fail → pass), "broken" (pass → fail), "better"/"worse"
    (graded scores), or "same"."""
    by_key = {(r["prompt"], r["reference"]): r for r in rows_b}
    out = []
    for a in rows_a:
        b = by_key.get((a["prompt"], a["reference"]))
        if b is None:
            continue
        sa, sb = a["score"], b["score"]
        if (sa >= 1.0) != (sb >= 1.0):
            change = "fixed" if sb >= 1.0 else "broken"
        else:
            change = "better" if sb > sa + 1e-9 else "worse" if sb < sa - 1e-9 else "same"
        out.append({"n": a["n"], "prompt": a["prompt"], "reference": a["reference"], "prediction_a": a["prediction"],
                    "score_a": sa, "prediction_b": b["prediction"], "score_b": sb, "change": change})
    return out


def load_examples(task: Task, limit: int = 0) -> list[tuple[list[dict], str]]:
    """(prompt messages, reference) per example of the task's evaluation set, the system prompt put first."""
    from .data import DatasetShape, detect_shape, read_dataset, to_conversation
    from .scoring import split_conversation

    ds = read_dataset(task.eval_path)
    shape, mapping = detect_shape(ds.column_names)
    if shape is DatasetShape.TEXT:
        raise InvalidInput(f"{task.eval_path} holds plain text: a task needs examples with a reference answer (chat "
                           "messages ending with the assistant's answer, prompt/completion, or Alpaca rows).")
    out = []
    for n, row in enumerate(ds, 1):
        conversation = to_conversation(row, shape, mapping)
        if not any(m["role"] == "assistant" and m["content"].strip() for m in conversation):
            raise InvalidInput(f"{task.eval_path}, example {n}: no reference answer (an assistant turn).")
        prompt, reference = split_conversation(conversation)
        system = [{"role": "system", "content": task.system_prompt}] if task.system_prompt.strip() else []
        out.append((system + prompt, reference))
        if limit and len(out) >= limit:
            break
    return out


def check_task(task: Task) -> int:
    """Refuse a task that cannot be scored (unreadable set, no references, bad regex, a scorer that does not fit the
    references); returns the number of examples."""
    if task.scorer == "judge" and not (task.judge_model.strip() and task.rubric.strip()):
        raise InvalidInput("The judge scorer needs a judge_model (a registered model that grades the answers) and a "
                           "rubric (what a passing answer does).")
    if task.scorer == "regex":
        if not task.pattern:
            raise InvalidInput("The regex scorer needs a pattern (what to extract from the answer).")
        try:
            re.compile(task.pattern)
        except re.error as exc:
            raise InvalidInput(f"pattern {task.pattern!r} is not a valid regular expression: {exc}") from None
    examples = load_examples(task)
    if not examples:
        raise InvalidInput(f"{task.eval_path} holds no examples.")
    references = [ref for _, ref in examples]
    if task.scorer in ("json", "json_f1"):
        bad = [i for i, ref in enumerate(references, 1) if _json(ref) is None]
        if bad:
            raise InvalidInput(f"The {task.scorer} scorer needs JSON references, but example(s) {bad[:5]} of "
                               f"{task.eval_path} do not parse as JSON. Choose exact, contains or chrf.")
    if task.scorer == "numeric" and any(_number(ref) is None for ref in references):
        raise InvalidInput("The numeric scorer needs a number in every reference.")
    return len(examples)
