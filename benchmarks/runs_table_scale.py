"""How fast the Runs tab draws its table with 10,000 runs in the store (goal: under 1 s per view).

Usage: .venv/bin/python benchmarks/runs_table_scale.py [--runs 10000] [--reps 15] [--home DIR] [--fill-only]
Fills a temporary workspace (or --home) through the real Store with synthetic runs shaped like the jobs write them
(real job configs, per-kind summaries, loss/eval metrics, errors of failed runs; dates over the last year), then
times with time.perf_counter the function the tab calls for a view (`table_view`: newest 500 matching rows plus
the matching count) on the default view and on filtered views, and the polling tick. Prints the median of --reps
repetitions (after one untimed warm-up) in milliseconds. --fill-only just fills the workspace (for a UI demo).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ["smollm2-135m-instruct", "smollm2-135m-ft-json", "smollm2-student-10l", "qwen2.5-0.5b-instruct",
          "smollm2-135m-onnx-int4-affine-b32", "tinyllama-1.1b-chat"]
KINDS = [("finetune", 30), ("distill", 15), ("quantize", 15), ("benchmark", 15), ("generate_data", 10),
         ("prepare_model", 5), ("quantize_sweep", 5), ("selftest", 5)]
STATUSES = [("succeeded", 70), ("failed", 15), ("cancelled", 8), ("interrupted", 4), ("running", 2), ("queued", 1)]
ERRORS = ["ValueError: dataset has no 'completion' column (found: text, label)",
          "RuntimeError: CUDA out of memory. Tried to allocate 256.00 MiB",
          "interrupted: the server stopped and the worker process is gone", "cancelled at step 40; checkpoint kept"]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")  # the Store's utcnow() format


def pick(rng: random.Random, weighted):
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def make_config(rng: random.Random, kind: str, model: str):
    """A real job config (validated by its pydantic class), varied the way people vary them."""
    from engine.configs import (BenchmarkConfig, DistillConfig, FineTuneConfig, GenerateDataConfig,
                                PrepareModelConfig, QuantizeConfig, QuantizeSweepConfig, SelfTestConfig)

    train = f"/data/{rng.choice(['json_extract', 'support_chat', 'sql_gen'])}.jsonl"
    if kind == "finetune":
        return FineTuneConfig(model_id=model, train_path=train, method=rng.choice(["lora", "lora", "full"]),
                              lora_r=rng.choice([4, 8, 16]), learning_rate=rng.choice([1e-3, 5e-4, 2e-4]),
                              epochs=rng.choice([1.0, 2.0, 3.0]), max_steps=rng.choice([0, 0, 0, 200]),
                              batch_size=rng.choice([2, 4, 8]), columns={"prompt": "question"} if rng.random() < .2
                              else {})
    if kind == "distill":
        return DistillConfig(teacher_model_id=model, train_path=train, keep_layers=rng.choice([6, 10, 15]),
                             alpha=rng.choice([0.0, 0.5, 0.7]), temperature=rng.choice([1.0, 2.0]),
                             epochs=rng.choice([1.0, 2.0]))
    if kind == "quantize":
        return QuantizeConfig(model_id=model, precision=rng.choice(["int4", "int8", "fp32"]),
                              block_size=rng.choice([32, 64, 128]))
    if kind == "quantize_sweep":
        return QuantizeSweepConfig(model_id=model)
    if kind == "benchmark":
        return BenchmarkConfig(model_ids=rng.sample(MODELS, rng.randint(1, 4)), repetitions=rng.choice([3, 5]))
    if kind == "generate_data":
        return GenerateDataConfig(teacher_model_id=model, temperature=rng.choice([0.0, 0.7]),
                                  max_prompts=rng.choice([0, 100, 500]))
    if kind == "prepare_model":
        return PrepareModelConfig(model_id=model, source="gguf", source_ref=f"/models/{model}.Q4_1.gguf")
    return SelfTestConfig(model_id=model)


def make_summary(rng: random.Random, kind: str, config, finished: bool) -> dict:
    if kind in ("finetune", "distill"):
        steps = config.max_steps or int(rng.randint(40, 400) * config.epochs)
        out = {"train_examples": rng.randint(200, 3000)} if kind == "finetune" else {
            "teacher_params_m": 134.5, "student_params_m": 59.2, "params_ratio": 0.44, "alpha": config.alpha}
        if finished:
            out.update(train_s=round(rng.uniform(60, 3000), 1), steps=steps, train_loss=round(rng.uniform(.5, 2), 4),
                       train_tokens_per_s=round(rng.uniform(300, 4000), 1), wall_s=round(rng.uniform(80, 3500), 1))
            out.update({"eval_loss_after": round(rng.uniform(.6, 2), 4), "score_after": round(rng.random(), 4)}
                       if kind == "finetune" else
                       {"agreement": round(rng.random(), 4), "decode_speedup": round(rng.uniform(1.5, 3), 4)})
        return out
    if kind == "benchmark":
        return {"hardware": {"cpu": "AMD EPYC 7B13", "threads": 2, "torch": "2.5.1"}, "models": 3,
                "results": [{"model_id": m, "decode_tok_s": round(rng.uniform(20, 200), 1),
                             "ppl": round(rng.uniform(8, 20), 2)} for m in config.model_ids],
                "wall_s": round(rng.uniform(30, 600), 1)} if finished else {}
    if kind == "quantize" and finished:
        return {"output": f"{config.model_id}-onnx", "variant": config.variant(), "size_mb": rng.randint(80, 600),
                "ppl_ratio": round(rng.uniform(1, 1.4), 4), "decode_tok_s": round(rng.uniform(50, 300), 1)}
    if kind == "generate_data" and finished:
        return {"backend": "transformers", "prompts": 500, "generated": 500, "kept": rng.randint(300, 500)}
    if kind == "prepare_model" and finished:
        return {"params_m": 134.5, "size_mb": 269.1}
    return {}


def make_metrics(rng: random.Random, kind: str, config, steps: int) -> list[tuple[str, int, float]]:
    """(name, step, value) as the training callback and the evaluations log them."""
    if kind not in ("finetune", "distill"):
        return [("total_s", 0, rng.uniform(5, 500)), ("size_mb", 0, rng.uniform(50, 600))]
    out, loss = [], rng.uniform(2.5, 4)
    every = max(steps // 8, 1)
    for step in range(every, steps + 1, every):
        loss *= rng.uniform(0.82, 0.97)
        out.append(("train_loss", step, loss))
        out.append(("learning_rate", step, config.learning_rate * (1 - step / (steps + 1))))
        if kind == "distill":
            out += [("kd_loss", step, loss * 0.4), ("ce_loss", step, loss * 1.1)]
        if step % (2 * every) == 0:
            out.append(("eval_loss", step, loss * rng.uniform(1.02, 1.15)))
    return out


def fill(store, n: int, seed: int = 0) -> None:
    """`n` runs (and their metrics) with exactly the columns and formats the Store and the runner write."""
    from engine import JOB_KINDS

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    created = sorted(now - timedelta(seconds=rng.uniform(0, 365 * 86400)) for _ in range(n))
    runs, metrics = [], []
    for i, when in enumerate(created):
        kind, status, model = pick(rng, KINDS), pick(rng, STATUSES), rng.choice(MODELS)
        if i >= n - 3:  # a few recent active ones, as polling would see them
            status = "running"
        config = make_config(rng, kind, model)
        finished = status == "succeeded"
        summary = make_summary(rng, kind, config, finished)
        started = when + timedelta(seconds=rng.uniform(0.2, 5)) if status != "queued" else None
        ended = (started + timedelta(seconds=summary.get("wall_s") or rng.uniform(5, 900))
                 if started and status not in ("running", "queued") else None)
        progress = 1.0 if finished else (0.0 if status == "queued" else round(rng.random(), 3))
        stage = {"succeeded": "done", "queued": "queued"}.get(status, f"step {int(progress * 200)}/200")
        runs.append({"kind": kind, "status": status, "model_id": config.model_ref(),
                     "config_json": config.model_dump_json(), "target": JOB_KINDS[kind].target, "created_at": iso(when),
                     "started_at": iso(started) if started else None, "finished_at": iso(ended) if ended else None,
                     "progress": progress, "stage": stage,
                     "eta_s": round(rng.uniform(10, 900), 1) if status == "running" else None,
                     "error": rng.choice(ERRORS) if status in ("failed", "interrupted") else None,
                     "pid": None, "pid_started": None, "cancel_requested": int(status == "cancelled"),
                     "summary_json": json.dumps(summary)})
        steps = summary.get("steps") or getattr(config, "max_steps", 0) or 80
        metrics.append([(name, step, value, iso(when + timedelta(seconds=step)))
                        for name, step, value in make_metrics(rng, kind, config, steps)])
    db = store.db
    with db.atomic():
        first = (db.execute("SELECT max(id) FROM runs").fetchone()[0] or 0) + 1
        db["runs"].insert_all(runs, batch_size=1000)
        db["metrics"].insert_all(({"run_id": first + i, "step": step, "name": name, "value": float(value),
                                   "time": t} for i, rows in enumerate(metrics) for name, step, value, t in rows),
                                 batch_size=5000)


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up: first-call costs (imports, page cache) are not what a user waits for on every view
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--fill-only", action="store_true")
    args = parser.parse_args()

    from engine import Engine, Settings

    scratch = None if args.home else Path(tempfile.mkdtemp(prefix="slmops-runs-scale-"))
    home = args.home or scratch / "ws"
    engine = Engine(Settings(home=home, offline=True), recover=False)  # recover would end the synthetic runs
    t0 = time.perf_counter()
    fill(engine.store, args.runs)
    total = engine.store.count_runs()
    print(f"workspace {home}: {total:,} runs, "
          f"{engine.store.db.execute('SELECT count(*) FROM metrics').fetchone()[0]:,} metric points "
          f"(filled in {time.perf_counter() - t0:.1f} s)")
    if args.fill_only:
        engine.close()
        return
    try:
        measure(engine, args.reps)
    finally:
        engine.close()
        if scratch is not None:
            shutil.rmtree(scratch)


def measure(engine, reps: int) -> None:
    """Print the median time of each view: query (SQL + records + count) and total (+ the table rows)."""
    from slmops_ui.tabs.runs import parse_filters, query_view, table_view  # gradio is imported, not timed

    newest = engine.list_runs(limit=1)[0].created_at[:10]
    start = (datetime.fromisoformat(newest) - timedelta(days=60)).date().isoformat()
    views = [
        ("default view (newest 500 + count)", ("any", "any", "any", "", "")),
        ("kind=finetune + status=succeeded", ("finetune", "succeeded", "any", "", "")),
        ("model=qwen2.5-0.5b-instruct", ("any", "any", "qwen2.5-0.5b-instruct", "", "")),
        (f"date range {start} .. {newest}", ("any", "any", "any", start, newest)),
        ("kind+status+model+dates", ("distill", "failed", "smollm2-135m-instruct", start, newest)),
    ]
    print(f"\nmedian of {reps} repetitions (time.perf_counter), goal < 1000 ms each; query = SQL + records + "
          "count, total = query + table rows (what the tab calls: table_view)\n")
    print(f"{'view':42} {'shown':>6} {'matching':>9} {'query ms':>9} {'total ms':>9}  goal")
    for label, values in views:
        filters, problem = parse_filters(*values)
        assert not problem, problem
        rows, line, runs = table_view(engine, filters)
        _, matching = query_view(engine, filters)
        q_ms = median_ms(lambda f=filters: query_view(engine, f), reps)
        t_ms = median_ms(lambda f=filters: table_view(engine, f), reps)
        print(f"{label:42} {len(rows):6,} {matching:9,} {q_ms:9.1f} {t_ms:9.1f}  {'ok' if t_ms < 1000 else 'SLOW'}")

    def poll_tick():  # what the 2 s timer does when nothing changed: query + signature, no rows
        runs, matching = query_view(engine, {})
        json.dumps([matching, [(r.id, r.status.value, round(r.progress, 3), r.stage) for r in runs]])
        engine.store.run_facets()
    p_ms = median_ms(poll_tick, reps)
    print(f"{'polling tick, nothing changed (every 2 s)':42} {'':6} {'':9} {'':9} {p_ms:9.1f}  "
          f"{'ok' if p_ms < 1000 else 'SLOW'}")


if __name__ == "__main__":
    main()
