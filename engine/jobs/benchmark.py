"""Job `benchmark`: every selected model measured in its own fresh process (speed, peak memory, quality), plus its
source/teacher's greedy answers for agreement; results stored as metrics and exported as CSV and JSON. With several
models (and `interleave`), all are loaded at once and their timed repetitions take turns, round by round, so the
machine's drift during the run hits every model alike; the rest (perplexity, scores) follows one model at a time."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

from ..errors import InvalidInput
from ..bench import agreement, hardware_record, machine_probes
from ..configs import GEN_LENGTHS, PROMPT_LENGTHS, BenchmarkConfig
from ..data import load_prompts
from ..loading import weights_of
from ..records import ModelFormat
from ..runner import die_with_parent

CONFIG = BenchmarkConfig
COLUMNS = ["model_id", "format", "variant", "parent_id", "lineage", "params_m", "size_mb", "load_s", "ttft_s",
           "ttft_s_low", "ttft_s_high", "ttft_s_std", "prefill_tok_s", "prefill_tok_s_low", "prefill_tok_s_high",
           "prefill_tok_s_std", "decode_tok_s", "decode_tok_s_low", "decode_tok_s_high", "decode_tok_s_std",
           "decode_half_width", "timed_calls", "repetitions", "speed_s", "peak_rss_mb", "ppl", "mc_accuracy", "task",
           "task_score", "task_ci_low", "task_ci_high", "task_examples", "agreement", "agreement_with"]


def lineage(store, model) -> str:
    """base → … → model, following parent links."""
    chain, seen, current = [model.id], {model.id}, model
    while current.parent_id and current.parent_id not in seen and store.has_model(current.parent_id):
        current = store.get_model(current.parent_id)
        chain.append(current.id)
        seen.add(current.id)
    return " → ".join(reversed(chain))


class Worker:
    """engine.bench_worker measuring one model in its own process: its progress relayed to the run, killed on
    cancel or failure. `finish` lets it run to the end and returns its result; with an interleaved request, `rep`
    first times one repetition at a time, when the job says."""

    def __init__(self, ctx, request: dict):
        self.ctx, self.model_id = ctx, request["model"]["id"]
        tag = f"{self.model_id}-{request['mode']}"
        self.res_path, self.log_path = ctx.workdir / f"{tag}.result.json", ctx.workdir / f"{tag}.log"
        req_path = ctx.workdir / f"{tag}.request.json"
        req_path.write_text(json.dumps(request), encoding="utf-8")
        self.res_path.unlink(missing_ok=True)
        with open(self.log_path, "w", encoding="utf-8") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "engine.bench_worker", str(req_path),
                                          str(self.res_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, env=dict(os.environ), preexec_fn=die_with_parent)

    def messages(self, lo: float = 0.0, hi: float = 0.0):
        """The worker's JSON lines, its progress shown in [lo, hi] of the run's bar when hi > lo."""
        for line in self.proc.stdout:
            self.ctx.check_cancelled()
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if hi > lo and "fraction" in msg:
                self.ctx.progress(lo + (hi - lo) * float(msg["fraction"]), msg.get("stage", ""))
            yield msg

    def until(self, key: str) -> dict:
        msg = next((m for m in self.messages() if key in m), None)
        if msg is None:
            self.failed()
        return msg

    def rep(self) -> dict:
        """One timed repetition: {"rep": count, "settled": bool, "spent": seconds of timing so far}."""
        self.proc.stdin.write("rep\n")
        self.proc.stdin.flush()
        return self.until("rep")

    def finish(self, lo: float, hi: float) -> dict:
        self.proc.stdin.close()  # "the rest": an interleaved worker goes on past its timing
        for _ in self.messages(lo, hi):
            pass
        self.proc.wait()
        if self.proc.returncode != 0 or not self.res_path.exists():
            self.failed()
        return json.loads(self.res_path.read_text(encoding="utf-8"))

    def failed(self):
        self.kill()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        raise RuntimeError(f"measuring {self.model_id} failed (exit {self.proc.returncode}):\n" + "\n".join(tail))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def measure(ctx, request: dict, lo: float, hi: float) -> dict:
    """One model measured from start to end in its own process."""
    worker = Worker(ctx, request)
    try:
        return worker.finish(lo, hi)
    finally:
        worker.kill()


def take_turns(ctx, requests: list[dict], workers: list[Worker], share: float) -> int:
    """A worker per request, loaded one after the other (each load time its own), then their timed repetitions
    round by round (the order rotating each round) until every one has settled; the bar moves through the first
    `share` of the run, each model's part by its repetitions (or, with a time budget, the budget it has spent).
    Returns the rounds."""
    for i, request in enumerate(requests):
        ctx.progress(share * 0.2 * i / len(requests), f"loading {request['model']['id']}")
        workers.append(Worker(ctx, request))
        workers[-1].until("ready")
    reps, budget = requests[0]["repetitions"], requests[0]["time_budget_s"]
    done = {w.model_id: 0.0 for w in workers}  # each model's share of its timing done
    active, rounds = list(workers), 0
    while active:
        order = active[rounds % len(active):] + active[:rounds % len(active)]
        rounds += 1
        for worker in order:
            msg = worker.rep()
            if msg["settled"]:
                active.remove(worker)
                done[worker.model_id] = 1.0
            else:
                done[worker.model_id] = min(0.95, max(msg["rep"] / max(reps, 1) * (0.5 if budget else 1.0),
                                                      msg["spent"] / budget if budget else 0.0))
            ctx.progress(share * (0.2 + 0.8 * sum(done.values()) / len(done)),
                         f"timing: round {rounds}, {len(workers) - len(active)} of {len(workers)} models settled")
    return rounds


PROCESS_BYTES = 600 * 2**20  # a benchmark worker before its weights: Python, torch or onnxruntime, the tokenizer


def resident_bytes(store, model) -> int:
    """About what a model's benchmark process holds: transformers loads full weights (and an adapter's base) as
    float32; an ONNX export keeps its files' weights."""
    if model.format == ModelFormat.ONNX:
        return PROCESS_BYTES + (model.size_bytes or 0)
    params = model.params or 0
    if model.format == ModelFormat.ADAPTER and model.parent_id and store.has_model(model.parent_id):
        params += store.get_model(model.parent_id).params or 0
    return PROCESS_BYTES + 4 * params


def fits_at_once(ctx, models) -> bool:
    """Whether all models fit in memory loaded side by side (interleaving keeps them so), with a fifth to spare;
    when not, the log says so and they are measured one after another."""
    import psutil

    need, free = sum(resident_bytes(ctx.store, m) for m in models), psutil.virtual_memory().available
    if need <= 0.8 * free:
        return True
    ctx.log(f"interleaving would hold the {len(models)} models in memory at once (about {need / 2**30:.1f} GiB; "
            f"{free / 2**30:.1f} GiB free): measuring them one after another instead", "warning")
    return False


def log_line(res: dict) -> str:
    """One model's line in the run log: its numbers, where its seconds went, its decode speed per repetition."""
    line = (f"{res['model_id']}: decode {res['decode_tok_s']:.1f} tok/s (median, 95 % interval "
            f"{res['decode_tok_s_low']:.1f}–{res['decode_tok_s_high']:.1f}, {res['repetitions']} repetitions in "
            f"{res['speed_s']:.0f} s), ttft {res['ttft_s'] * 1000:.0f} ms, peak RSS {res['peak_rss_mb']:.0f} MB")
    if res.get("ppl"):
        line += f", perplexity {res['ppl']:.3f}"
    if res.get("mc_accuracy") is not None:
        line += f", MC {res['mc_accuracy']:.1%}"
    if res.get("task_score") is not None:
        line += (f", task {res['task']} {res['task_score']:.3f} ({res['task_ci_low']:.3f}–{res['task_ci_high']:.3f}, "
                 f"{res['task_examples']} examples)")
    if res.get("stage_s"):
        line += "; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in res["stage_s"].items())
    if res.get("decode_tok_s_reps"):
        line += "; decode tok/s per repetition: " + ", ".join(f"{v:.1f}" for v in res["decode_tok_s_reps"])
    return line


def run(ctx, config: BenchmarkConfig) -> None:
    from ..exports import export_summary

    store = ctx.store
    models = [store.get_model(m) for m in config.model_ids]
    prompts = [p["prompt"] for p in load_prompts(config.prompts_path)]
    if not prompts:
        raise InvalidInput(f"{config.prompts_path} holds no prompts")
    timed = prompts[:config.prompt_count]
    agree_prompts = prompts[:config.agreement_prompts]
    task = ctx.store.task_json(config.task) if config.task else None
    hardware = {**hardware_record(config.threads), **machine_probes(config.threads)}
    ctx.summary(hardware=hardware)
    ctx.log("hardware: " + ", ".join(f"{k}={v}" for k, v in hardware.items()))

    def request(model, mode: str, interleaved: bool = False) -> dict:
        path, adapter = weights_of(store, model)
        return {"model": {"id": model.id, "format": model.format, "path": path, "adapter_path": adapter},
                "mode": mode, "interleaved": interleaved, "threads": config.threads, "prompts": timed,
                "new_tokens": GEN_LENGTHS[config.gen_length],
                "prefix_tokens": PROMPT_LENGTHS[config.prompt_length], "repetitions": config.repetitions,
                "warmup": config.warmup, "time_budget_s": config.time_budget_s,
                "target_half_width": config.target_half_width, "ppl_tokens": config.ppl_tokens, "mc": config.mc,
                "mc_questions": config.mc_questions, "agreement_prompts": agree_prompts,
                "agreement_tokens": config.agreement_tokens, "task": json.loads(task) if task else None,
                "task_limit": config.task_limit}

    # references for agreement: each model's parent (source of an export or adapter, teacher of a student)
    refs = {m.parent_id for m in models if m.parent_id and store.has_model(m.parent_id)} if agree_prompts else set()
    extra_refs = [store.get_model(r) for r in refs if r not in config.model_ids]
    steps = len(models) + len(extra_refs)
    results, greedy = [], {}
    t_start = time.perf_counter()
    interleave = config.interleave and len(models) > 1 and fits_at_once(ctx, models)
    workers: list[Worker] = []
    share = 0.6 if interleave else 0.0  # the interleaved timing's share of the bar
    try:
        if interleave:
            rounds = take_turns(ctx, [request(m, "full", interleaved=True) for m in models], workers, share)
            ctx.log(f"timing: the {len(models)} models' repetitions interleaved in {rounds} rounds")
        for i, model in enumerate(models):
            lo, hi = share + (1 - share) * i / steps, share + (1 - share) * (i + 1) / steps
            res = workers[i].finish(lo, hi) if workers else measure(ctx, request(model, "full"), lo, hi)
            greedy[model.id] = res.pop("greedy", None)
            facts = export_summary(store, model)
            res.update(format=model.format, variant=facts.get("variant", ""), parent_id=model.parent_id or "",
                       lineage=lineage(store, model), params_m=round((model.params or 0) / 1e6, 1),
                       size_mb=round((model.size_bytes or 0) / 1e6, 1))
            results.append(res)
            for name in ("load_s", "ttft_s", "prefill_tok_s", "decode_tok_s", "peak_rss_mb", "ppl", "mc_accuracy",
                         "task_score", "size_mb"):
                if res.get(name) is not None:
                    ctx.metric(name, res[name], step=i)
            ctx.log(log_line(res))
            ctx.summary(results=[{k: r.get(k) for k in COLUMNS} for r in results])
    finally:
        for worker in workers:
            worker.kill()
    for j, ref in enumerate(extra_refs):
        lo, hi = share + (1 - share) * (len(models) + j) / steps, share + (1 - share) * (len(models) + j + 1) / steps
        greedy[ref.id] = measure(ctx, request(ref, "reference"), lo, hi).get("greedy")
    for res in results:
        ref = res["parent_id"]
        if ref and greedy.get(ref) is not None and greedy.get(res["model_id"]) is not None:
            res["agreement"] = agreement(greedy[res["model_id"]], greedy[ref], config.agreement_tokens)
            res["agreement_with"] = ref
            ctx.metric("agreement", res["agreement"], step=config.model_ids.index(res["model_id"]))
    rows = [{k: r.get(k) for k in COLUMNS} for r in results]
    wall = time.perf_counter() - t_start
    ctx.summary(results=rows, wall_s=round(wall, 1), models=len(rows))
    write_exports(ctx, rows, hardware, config)
    ctx.progress(1.0, "done")


def write_exports(ctx, rows: list[dict], hardware: dict, config: BenchmarkConfig) -> None:
    csv_path, json_path = ctx.workdir / "benchmark.csv", ctx.workdir / "benchmark.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"config": config.model_dump(), "hardware": hardware, "results": rows},
                                    indent=1), encoding="utf-8")
    ctx.artifact("benchmark_csv", csv_path)
    ctx.artifact("benchmark_json", json_path)
