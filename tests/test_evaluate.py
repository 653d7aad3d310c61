"""Tasks and the evaluate job: every scorer on small cases, the intervals, a tiny model scored through the job (the
JSONL of answers, the summary), and the bundled task registered on first start."""
import json

import pytest

from engine import EvaluateConfig, InvalidInput, Task
from engine.configs import BenchmarkConfig
from engine.tasks import interval, score


def task(scorer: str, **extra) -> Task:
    return Task(name="t", eval_path="unused.jsonl", scorer=scorer, **extra)


@pytest.mark.parametrize("scorer, extra, prediction, reference, expected", [
    ("exact", {}, "  Paris\n", "paris", 1.0),
    ("exact", {"ignore_case": False}, "Paris", "paris", 0.0),
    ("json", {}, '{"b": 2, "a": 1}', '{"a": 1, "b": 2}', 1.0),
    ("json", {}, '{"a": 1', '{"a": 1}', 0.0),
    ("json_f1", {}, '{"a": 1, "b": 3}', '{"a": 1, "b": 2}', 0.5),
    ("contains", {}, "The capital is PARIS.", "Paris", 1.0),
    ("regex", {"pattern": r"answer: (\w+)"}, "so the answer: Blue!", "blue", 1.0),
    ("numeric", {"tolerance": 0.01}, "about 3.14159 units", "3.14", 1.0),
    ("numeric", {"tolerance": 0.01}, "no number", "3.14", 0.0),
])
def test_scorers(scorer, extra, prediction, reference, expected):
    assert score(task(scorer, **extra), prediction, reference) == pytest.approx(expected)


def test_chrf_grades_similarity_and_intervals_bound_the_mean():
    close = score(task("chrf"), "The cat sat on the mat.", "The cat sat on a mat.")
    far = score(task("chrf"), "Quantum chromodynamics.", "The cat sat on a mat.")
    assert 0.5 < close < 1.0 and far < 0.2
    lo, hi = interval([1.0] * 88 + [0.0] * 12, binary=True)  # Wilson
    assert lo < 0.88 < hi and round(lo, 2) == 0.80 and round(hi, 2) == 0.93
    graded = [0.1, 0.5, 0.9, 0.7, 0.3] * 10
    lo, hi = interval(graded, binary=False)  # bootstrap
    assert lo < sum(graded) / len(graded) < hi and hi - lo < 0.3


def test_a_tiny_model_is_scored_by_the_evaluate_job(tiny_engine, tmp_path):
    assert {"request_to_json", "ticket_label"} <= {t.name for t in tiny_engine.list_tasks()}  # bundled
    rows = [{"messages": [{"role": "user", "content": f"Say {w}"}, {"role": "assistant", "content": w}]}
            for w in ("Paris", "small", "fox", "LoRA")]
    path = tmp_path / "say.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert tiny_engine.add_task(Task(name="say", eval_path=str(path), scorer="chrf", max_new_tokens=6)) == 4
    run_id = tiny_engine.start_run(EvaluateConfig(model_id="tiny", task="say", backend="transformers"))
    run = tiny_engine.wait_run(run_id, timeout=300)
    assert run.status.value == "succeeded", run.error
    s = run.summary
    assert s["examples"] == 4 and s["backend"].startswith("transformers") and s["task_config"]["scorer"] == "chrf"
    assert 0.0 <= s["ci_low"] <= s["score"] <= s["ci_high"] <= 1.0
    [artifact] = [a for a in tiny_engine.run_artifacts(run_id) if a.kind == "predictions"]
    answers = [json.loads(line) for line in open(artifact.path, encoding="utf-8")]
    assert [a["reference"] for a in answers] == ["Paris", "small", "fox", "LoRA"]
    assert all(set(a) == {"n", "prompt", "reference", "prediction", "score"} for a in answers)
    # the lineage view shows the model's newest score on each task it was scored on
    shown = tiny_engine.lineage("tiny")["numbers"]["task say"]
    assert shown == f"{s['score']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f})"


def test_a_judge_task_is_graded_by_its_judge_model(tiny_engine, tmp_path):
    from engine.tasks import judge_prompt, verdict

    assert [verdict(r) for r in ("PASS", " pass.", "Yes, it is", "FAIL", "The answer passes", "")] == \
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    path = tmp_path / "open.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant",
                                                                                      "content": a}]}) + "\n"
                            for q, a in (("Describe the sea.", "Large, salty and blue."), ("Name a fruit.", "Apple"))))
    judged = Task(name="open", eval_path=str(path), scorer="judge", judge_model="tiny", max_new_tokens=6,
                  rubric="The answer is about the same thing as the reference.")
    prompt = judge_prompt(judged, "Name a fruit.", "Apple", "Pear")
    assert "Rubric: The answer is about" in prompt[-1]["content"] and "Candidate answer: Pear" in prompt[-1]["content"]
    assert tiny_engine.add_task(judged) == 2
    run_id = tiny_engine.start_run(EvaluateConfig(model_id="tiny", task="open", backend="transformers"))
    run = tiny_engine.wait_run(run_id, timeout=300)
    assert run.status.value == "succeeded", run.error
    [artifact] = [a for a in tiny_engine.run_artifacts(run_id) if a.kind == "predictions"]
    rows = [json.loads(line) for line in open(artifact.path, encoding="utf-8")]
    assert len(rows) == 2 and all(r["score"] == verdict(r["judge"]) for r in rows)  # the judge's reply decides
    assert any("an LLM judge's opinion" in line.message for line in tiny_engine.run_logs(run_id))
    with pytest.raises(InvalidInput, match="judge model"):
        tiny_engine.check(BenchmarkConfig(model_ids=["tiny"], task="open"))


def test_compare_says_which_examples_flipped():
    from engine.tasks import compare

    def rows(scores):
        return [{"n": i + 1, "prompt": f"p{i}", "reference": "r", "prediction": f"a{s}", "score": s}
                for i, s in enumerate(scores)]
    changes = [r["change"] for r in compare(rows([1.0, 0.0, 1.0, 0.0, 0.4, 0.6]), rows([0.0, 1.0, 1.0, 0.0, 0.6, 0.4]))]
    assert changes == ["broken", "fixed", "same", "same", "better", "worse"]
    assert compare(rows([1.0]), [{"n": 1, "prompt": "other", "reference": "r", "prediction": "", "score": 0}]) == []


def test_two_runs_of_different_tasks_cannot_be_compared(tiny_engine):
    runs = [tiny_engine.start_run(EvaluateConfig(model_id="tiny", task=t, limit=2, backend="transformers"))
            for t in ("request_to_json", "ticket_label")]
    for r in runs:
        assert tiny_engine.wait_run(r, timeout=300).status.value == "succeeded"
    with pytest.raises(InvalidInput, match="same task"):
        tiny_engine.compare_predictions(*runs)
    same = tiny_engine.start_run(EvaluateConfig(model_id="tiny", task="ticket_label", limit=2, backend="transformers"))
    assert tiny_engine.wait_run(same, timeout=300).status.value == "succeeded"
    rows = tiny_engine.compare_predictions(runs[1], same)
    assert len(rows) == 2 and all(r["change"] == "same" for r in rows)  # greedy: the same answers twice
