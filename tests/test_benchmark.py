"""Benchmark job on tiny models of two formats; the scorers against hand-made and direct computations; the chart
functions on given records."""
import json
import math

import numpy as np

from engine import BenchmarkConfig, QuantizeConfig
from engine import bench
from slmops_ui.bench_charts import bar_figure, pareto_front, scatter_figure, table_rows


def test_benchmark_tiny_torch_and_onnx(tiny_engine):
    q = tiny_engine.start_run(QuantizeConfig(model_id="tiny", precision="fp32", verify_tokens=0))
    assert tiny_engine.wait_run(q, timeout=300).status.value == "succeeded"
    run_id = tiny_engine.start_run(BenchmarkConfig(model_ids=["tiny", "tiny-onnx-fp32"], prompt_count=2,
                                                   gen_length="short", repetitions=3, time_budget_s=0, warmup=1,
                                                   ppl_tokens=256,
                                                   mc_questions=8, agreement_prompts=4, threads=1,
                                                   task="request_to_json", task_limit=3))
    run = tiny_engine.wait_run(run_id, timeout=600)
    assert run.status.value == "succeeded", (run.error, [x.message for x in tiny_engine.run_logs(run_id)][-8:])
    rows = {r["model_id"]: r for r in run.summary["results"]}
    assert set(rows) == {"tiny", "tiny-onnx-fp32"}
    assert rows["tiny"]["format"] == "hf" and rows["tiny-onnx-fp32"]["format"] == "onnx-genai"
    for r in rows.values():
        assert r["timed_calls"] == 3 * 2 and r["repetitions"] == 3  # warm-up excluded; stats over repetitions
        for key in ("decode_tok_s", "ttft_s", "prefill_tok_s", "load_s", "peak_rss_mb", "ppl", "size_mb"):
            assert r[key] > 0, key
        for key in ("decode_tok_s", "ttft_s", "prefill_tok_s"):  # medians with their intervals
            assert r[f"{key}_std"] >= 0 and r[f"{key}_low"] <= r[key] <= r[f"{key}_high"]
        assert math.isfinite(r["ppl"]) and 0.0 <= r["mc_accuracy"] <= 1.0
        assert r["peak_rss_mb"] > 100  # a whole Python process with torch or onnxruntime loaded
        assert r["task"] == "request_to_json" and r["task_examples"] == 3 and 0.0 <= r["task_score"] <= 1.0
        assert r["task_ci_low"] <= r["task_score"] <= r["task_ci_high"]
    # the fp32 export computes what its source computes: same perplexity, same greedy answers
    assert abs(rows["tiny-onnx-fp32"]["ppl"] / rows["tiny"]["ppl"] - 1) < 1e-3
    assert rows["tiny-onnx-fp32"]["agreement_with"] == "tiny" and rows["tiny-onnx-fp32"]["agreement"] >= 0.75
    hardware = run.summary["hardware"]
    assert hardware["cores"] >= 1 and hardware["onnxruntime_genai_version"]
    assert hardware["bandwidth_gb_s"] > 0.5 and hardware["noise_floor_pct"] >= 0  # what a speed figure is worth
    files = {a.kind: a.path for a in tiny_engine.run_artifacts(run_id)}
    assert len(open(files["benchmark_csv"]).read().strip().splitlines()) == 3
    assert len(json.load(open(files["benchmark_json"]))["results"]) == 2
    # the two models' timed repetitions took turns (both loaded at once), three rounds for three repetitions
    assert any("repetitions interleaved in 3 rounds" in x.message for x in tiny_engine.run_logs(run_id))
    # where the wall time went, per model and part
    assert any("seconds: load" in x.message and "multiple_choice" in x.message for x in tiny_engine.run_logs(run_id))
    per_rep = [x.message.split("per repetition: ")[1] for x in tiny_engine.run_logs(run_id)
               if "per repetition" in x.message]
    assert len(per_rep) == 2 and all(len(line.split(", ")) == 3 for line in per_rep)  # a value per repetition
    # the multiple-choice scorer runs an ONNX model's shared question once (KV cache, rewound per option) and
    # gets what separate forward passes get
    onnx = bench.OgBackend(tiny_engine.get_model("tiny-onnx-fp32").path, threads=1)
    seqs = [onnx.encode("Question: What is the capital of France?\nAnswer:" + option)
            for option in (" Paris", " Lyon, on the Rhône", " a", " Nice")]
    shared, separate = onnx.batch_logits(seqs), [onnx.logits(s) for s in seqs]
    assert [a.shape for a in shared] == [b.shape for b in separate]
    assert max(float(np.abs(a - b).max()) for a, b in zip(shared, separate)) < 1e-3


class ScriptedBackend:
    """Characters as tokens; the logits at position i put all the mass on the next character of `script`."""

    def __init__(self, script: str):
        self.script = script

    def encode(self, text):
        return [ord(c) for c in text]

    def logits(self, ids):
        out = np.zeros((len(ids), 256))
        for i in range(len(ids)):
            if i + 1 < len(self.script):
                out[i, ord(self.script[i + 1])] = 20.0
        return out


def test_interleaving_falls_back_to_one_model_at_a_time_when_they_do_not_fit_in_memory_together(tiny_engine):
    import dataclasses
    from types import SimpleNamespace

    from engine.jobs.benchmark import fits_at_once

    logs = []
    ctx = SimpleNamespace(store=tiny_engine.store, log=lambda message, level="info": logs.append((level, message)))
    tiny = tiny_engine.get_model("tiny")
    assert fits_at_once(ctx, [tiny, tiny]) and logs == []
    huge = dataclasses.replace(tiny, params=10**12)  # 4 TB of float32 weights
    assert not fits_at_once(ctx, [tiny, huge])
    assert logs[0][0] == "warning" and "one after another" in logs[0][1]


def test_speed_warms_up_with_whole_calls_then_times_each_repetition_once():
    calls = []

    class Backend:  # a token every 10 ms of a clock that only this backend moves
        clock = 0.0

        def generate(self, ids, n, stop_at_eos=False):
            calls.append((tuple(ids), n))
            t0, times = self.clock, [self.clock + 0.05 + 0.01 * i for i in range(n)]
            self.clock = times[-1]
            return list(range(n)), times, t0

    out = bench.speed(Backend(), [[1, 2], [3, 4, 5]], new_tokens=11, reps=4, warmup=3)
    assert calls[:3] == [((1, 2), 11), ((3, 4, 5), 11), ((1, 2), 11)]  # the warm-up: the prompts in turn
    assert len(calls) == 3 + 4 * 2 and out["timed_calls"] == 8 and out["repetitions"] == 4
    assert math.isclose(out["decode_tok_s"], 100.0) and out["decode_tok_s_std"] < 1e-9
    assert math.isclose(out["ttft_s"], 0.05) and math.isclose(out["prefill_tok_s"], 5 / 0.1)


def test_speed_repeats_by_time_budget_until_its_interval_is_tight():
    class Backend:  # decode speed per call from `speeds` in turn, on a clock only this backend moves
        def __init__(self, speeds):
            self.speeds, self.calls, self.clock = speeds, 0, 0.0

        def generate(self, ids, n, stop_at_eos=False):
            step = 1.0 / self.speeds[self.calls % len(self.speeds)]
            self.calls += 1
            t0, times = self.clock, [self.clock + 0.01 + step * i for i in range(n)]
            self.clock = times[-1]
            return list(range(n)), times, t0

    steady = bench.speed(Backend([100.0]), [[1]], new_tokens=9, reps=2, warmup=0, budget_s=60, target=0.03)
    assert steady["repetitions"] == 6 and steady["decode_half_width"] == 0.0  # six give a 95 % interval
    for key in ("decode_tok_s_low", "decode_tok_s", "decode_tok_s_high"):
        assert math.isclose(steady[key], 100.0)
    noisy = bench.speed(Backend([50.0, 150.0]), [[1]], new_tokens=9, reps=2, warmup=0, budget_s=60, target=0.03,
                        max_reps=20)
    assert noisy["repetitions"] == 20 and noisy["decode_half_width"] > 0.03  # never tight: up to the cap
    assert math.isclose(noisy["decode_tok_s_low"], 50.0) and math.isclose(noisy["decode_tok_s_high"], 150.0)
    exact = bench.speed(Backend([50.0, 150.0]), [[1]], new_tokens=9, reps=3, warmup=0)  # no budget: exactly reps
    assert exact["repetitions"] == 3


def test_the_median_interval_is_the_distribution_free_one():
    from engine.stats import median_interval, within_noise

    assert median_interval([6, 1, 5, 2, 4, 3]) == (3.5, 1, 6)  # n = 6: the range covers 96.9 %
    assert median_interval(list(range(1, 21))) == (10.5, 6, 15)  # n = 20: x(6) and x(15), 95.9 %
    assert within_noise((10, 9, 11), (10.5, 10.8, 12)) and not within_noise((10, 9, 11), (13, 12, 14))


def test_mc_scorer_picks_the_known_answer():
    questions = [{"question": "What is the capital of France?", "choices": ["Lyon", "Paris", "Nice", "Rome"],
                  "answer": 1}]
    backend = ScriptedBackend("Question: What is the capital of France?\nAnswer: Paris")
    accuracy, picks = bench.mc_accuracy(backend, questions)
    assert picks == [1] and accuracy == 1.0
    wrong = ScriptedBackend("Question: What is the capital of France?\nAnswer: Rome")
    assert bench.mc_accuracy(wrong, questions) == (0.0, [3])


def test_perplexity_matches_a_direct_computation(tiny_model_dir):
    import torch

    from tests.helpers import CORPUS

    backend = bench.TorchBackend(str(tiny_model_dir))
    text = " ".join(CORPUS)
    ppl, count = bench.perplexity(backend, text, n_tokens=300, window=128)
    ids = backend.encode(text)[:300]
    total = 0.0
    with torch.inference_mode():
        for start in range(0, 300, 128):
            w = torch.tensor([ids[start:start + 128]])
            total += float(backend.model(input_ids=w, labels=w).loss) * (w.shape[1] - 1)
    assert count == 300 - 3
    assert abs(ppl - math.exp(total / count)) < 1e-3 * ppl


ROWS = [
    {"model_id": "base", "format": "hf", "size_mb": 540.0, "decode_tok_s": 30.0, "decode_tok_s_std": 1.0,
     "ttft_s": 0.05, "ttft_s_std": 0.01, "prefill_tok_s": 700.0, "peak_rss_mb": 1200.0, "ppl": 14.7,
     "mc_accuracy": 0.40, "lineage": "base"},
    {"model_id": "int4", "format": "onnx-genai", "size_mb": 118.0, "decode_tok_s": 130.0, "decode_tok_s_std": 3.0,
     "ttft_s": 0.02, "ttft_s_std": 0.002, "prefill_tok_s": 1500.0, "peak_rss_mb": 400.0, "ppl": 14.8,
     "mc_accuracy": 0.40, "lineage": "base → int4", "agreement": 0.9, "agreement_with": "base"},
    {"model_id": "worse", "format": "onnx-genai", "size_mb": 200.0, "decode_tok_s": 100.0, "decode_tok_s_std": 2.0,
     "ttft_s": 0.03, "ttft_s_std": 0.002, "prefill_tok_s": 1200.0, "peak_rss_mb": 500.0, "ppl": 15.0,
     "mc_accuracy": 0.35, "lineage": "base → worse"},
]


def test_chart_functions_return_the_expected_traces():
    assert [r["model_id"] for r in pareto_front(ROWS)] == ["int4"]  # smaller, faster and as accurate
    fig = scatter_figure(ROWS)
    markers = [t for t in fig.data if t.name == "models"][0]
    assert list(markers.text) == ["base", "int4", "worse"]
    assert markers.y[1] == 1000.0 / 130.0  # ms per token
    assert "lineage" not in markers.hovertemplate and "base → int4" == markers.customdata[1][0]
    assert fig.layout.xaxis.title.text == "size on disk (MB)"
    bars = bar_figure(ROWS, "decode_tok_s")
    assert list(bars.data[0].y) == [30.0, 130.0, 100.0] and list(bars.data[0].error_y.array) == [1.0, 3.0, 2.0]
    assert bar_figure(ROWS, "agreement").data[0].x == ("int4",)
    assert table_rows(ROWS)[1][10] == "90% vs base"
    assert scatter_figure([]) is None


def test_with_a_task_the_charts_judge_quality_by_the_task_score():
    scored = [{**r, "task": "t", "task_score": s, "task_ci_low": s - 0.1, "task_ci_high": min(s + 0.1, 1.0)}
              for r, s in zip(ROWS, (0.9, 0.5, 0.4))]
    # int4 is smaller and faster but loses the task, so base is on the front too; worse loses to int4 on all three
    assert [r["model_id"] for r in pareto_front(scored)] == ["base", "int4"]
    fig = scatter_figure(scored)
    markers = [t for t in fig.data if t.name == "models"][0]
    assert markers.marker.colorbar.title.text == "task score, t (%)" and list(markers.marker.color) == [90, 50, 40]
    assert "task score" in fig.layout.title.text
    assert table_rows(scored)[0][3] == "90.0% (80%–100%)"
    # medians with 95 % intervals; overlapping intervals are called within noise, in the table and the bars
    measured = [{**r, "repetitions": 8, "decode_tok_s_low": r["decode_tok_s"] - w, "decode_tok_s_high":
                 r["decode_tok_s"] + w, "ttft_s_low": r["ttft_s"], "ttft_s_high": r["ttft_s"]}
                for r, w in zip(ROWS, (1.0, 20.0, 15.0))]
    cells = [row[4] for row in table_rows(measured)]
    assert cells == ["30.0 (29.0–31.0)", "130.0 (110.0–150.0); within noise of worse",
                     "100.0 (85.0–115.0); within noise of int4"]
    bars = bar_figure(measured, "decode_tok_s").data[0]
    assert list(bars.text) == ["30", "130 ≈", "100 ≈"] and list(bars.error_y.arrayminus) == [1.0, 20.0, 15.0]
    assert table_rows([{**measured[0], "repetitions": 4}])[0][4] == "30.0 (29.0–31.0, range of 4)"
    latency = [t for t in scatter_figure(measured).data if t.name == "models"][0].error_y
    assert math.isclose(latency.array[1], 1000 / 110 - 1000 / 130) and math.isclose(latency.arrayminus[1],
                                                                                   1000 / 130 - 1000 / 150)
    once = table_rows([{**ROWS[0], "repetitions": 1}])[0]
    assert once[4] == "30.0 (1 repetition)" and once[5] == "50 (1 repetition)"  # no "± 0.0" from one sample
