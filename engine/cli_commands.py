"""The commands of `python -m engine` (engine/cli.py parses the flags): each a thin call into the Engine API that
prints what it did."""
from __future__ import annotations

import json
import os
import sys
import threading

from .api import Engine
from .cli_flags import config_from_args, load_config
from .configs import GenerationParams
from .errors import InvalidInput
from .records import ModelStatus
from .tasks import Task

def _print_table(rows: list[dict]) -> None:
    if not rows:
        print("(none)")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


def _follow(engine: Engine, run_id: int) -> int:
    """Print a run's stage changes until it ends; exit code 0 only when it succeeded."""
    last = None
    while True:
        run = engine.wait_run(run_id, timeout=0.5)
        line = f"run {run_id}: {run.status.value} {run.progress:.0%} {run.stage}"
        if run.queue_position:
            slots = engine.settings.max_parallel_jobs
            line += f" (position {run.queue_position} in the queue; SLMOPS_MAX_JOBS={slots})"
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if run.status.final:
            if run.error:
                print(f"run {run_id}: {run.error}", file=sys.stderr)
            return 0 if run.status.value == "succeeded" else 1


def cmd_models_list(engine: Engine, args) -> int:
    _print_table([{"name": m.id, "status": m.status, "format": m.format, "arch": m.architecture or "",
                   "params_m": f"{m.params / 1e6:.1f}" if m.params else "", "size_mb":
                   f"{m.size_bytes / 1e6:.0f}" if m.size_bytes else "", "source": m.source, "path": m.path}
                  for m in engine.list_models()])
    return 0


def cmd_models_add(engine: Engine, args) -> int:
    model = engine.add_model(args.ref, name=args.name, source=args.source)
    print(f"registered '{model.id}' ({model.status})")
    if model.status == ModelStatus.PREPARING.value and not args.no_wait:
        return _follow(engine, model.run_id)
    return 0


def cmd_models_default(engine: Engine, args) -> int:
    model = engine.ensure_default_model()
    if model.status == ModelStatus.PREPARING.value:
        return _follow(engine, model.run_id)
    print(f"'{model.id}' is {model.status} at {model.path}")
    return 0


def cmd_models_delete(engine: Engine, args) -> int:
    engine.delete_model(args.name)
    print(f"deleted '{args.name}'")
    return 0


def cmd_chat(engine: Engine, args) -> int:
    params = GenerationParams(system_prompt=args.system, temperature=args.temperature, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens)
    shown = ""
    last = None
    for last in engine.chat(args.model, [{"role": "user", "content": args.prompt}], params, threading.Event()):
        sys.stdout.write(last.text[len(shown):])
        sys.stdout.flush()
        shown = last.text
    print()
    if last is not None and last.tokens_per_s:
        print(f"[{last.new_tokens} tokens, {last.tokens_per_s:.1f} tok/s]", file=sys.stderr)
    return 0


def _short_summary(summary: dict, width: int = 100) -> str:
    """The scalar results of a run on one line (lists and tables are for `runs show`)."""
    text = json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_runs_list(engine: Engine, args) -> int:
    _print_table([{"id": r.id, "kind": r.kind, "status": r.status.value, "model": r.model_id or "",
                   "created": r.created_at[:19], "progress": f"{r.progress:.0%}",
                   "summary": _short_summary(r.summary)}
                  for r in engine.list_runs(args.limit)])
    return 0


def cmd_runs_show(engine: Engine, args) -> int:
    run = engine.get_run(args.id)
    print(json.dumps({"id": run.id, "kind": run.kind, "status": run.status.value, "model": run.model_id,
                      "created": run.created_at, "started": run.started_at, "finished": run.finished_at,
                      "stage": run.stage, "error": run.error, "config": run.config, "summary": run.summary},
                     indent=2))
    for m in engine.run_metrics(run.id):
        print(f"metric {m.name}[{m.step}] = {m.value:.4g}")
    for a in engine.run_artifacts(run.id):
        print(f"artifact {a.kind}: {a.path} ({a.size_bytes / 1e6:.1f} MB)")
    for line in engine.run_logs(run.id, args.tail):
        print(f"{line.time[11:19]} {line.level:7} {line.message}")
    return 0


def cmd_runs_olive_config(engine: Engine, args) -> int:
    path = engine.olive_config(args.id)
    print(f"{path}\nrepeat the run with: olive run --config {path}")
    return 0


def cmd_runs_cancel(engine: Engine, args) -> int:
    run = engine.cancel_run(args.id)
    print(f"run {run.id}: cancel requested ({run.status.value})")
    return 0


def cmd_runs_delete(engine: Engine, args) -> int:
    engine.delete_run(args.id)
    print(f"deleted run {args.id}")
    return 0


def cmd_run(engine: Engine, args) -> int:
    """Start a job from a JSON or YAML config file (`kind:` selects the job) and follow it."""
    config = load_config(args.config)
    run_id = engine.start_run(config)
    print(f"started run {run_id}")
    return _follow(engine, run_id)


def cmd_training_job(engine: Engine, args) -> int:
    """Fine-tune or distill from a config file: in a worker normally, in this process on every rank under
    torchrun (or with --in-process)."""
    from .jobs.launch import run_in_process, world

    config = config_from_args(args, args.command)
    rank, size = world()
    if size == 1 and not args.in_process:
        run_id = engine.start_run(config)
        print(f"started run {run_id}")
        return _follow(engine, run_id)
    if rank == 0:
        engine.check(config)
    run_id = run_in_process(engine, config)
    if rank == 0:
        run = engine.get_run(run_id)
        print(f"run {run_id}: {run.status.value} {json.dumps(run.summary)}")
    return 0


def cmd_quantize(engine: Engine, args) -> int:
    """Export a model (ONNX Runtime GenAI, or GGUF) from a config file or from flags, and follow the run."""
    config = config_from_args(args, args.command)
    run_id = engine.start_run(config)
    print(f"started run {run_id}: {config.model_id} → {config.output_id()}")
    return _follow(engine, run_id)


def cmd_benchmark(engine: Engine, args) -> int:
    """Benchmark models from a config file or flags; print the table; CSV/JSON land in the run folder."""
    config = config_from_args(args, "benchmark")
    run_id = engine.start_run(config)
    print(f"started run {run_id}")
    code = _follow(engine, run_id)
    run = engine.get_run(run_id)
    rows = run.summary.get("results", [])
    _print_table([{"model": r["model_id"], "format": r["format"], "size_mb": r["size_mb"],
                   "decode_tok_s": f"{r['decode_tok_s']:.1f} "
                                   f"({r['decode_tok_s_low']:.1f}–{r['decode_tok_s_high']:.1f})",
                   "reps": r["repetitions"],
                   "ttft_ms": f"{r['ttft_s'] * 1000:.0f}", "peak_rss_mb": f"{r['peak_rss_mb']:.0f}",
                   "ppl": f"{r['ppl']:.3f}" if r.get("ppl") else "", "mc_acc": f"{r['mc_accuracy']:.3f}"
                   if r.get("mc_accuracy") is not None else "", "agreement": f"{r['agreement']:.2f}"
                   if r.get("agreement") is not None else ""} for r in rows])
    for a in engine.run_artifacts(run_id):
        print(f"{a.kind}: {a.path}")
    return code


def cmd_eval(engine: Engine, args) -> int:
    """Score a model on a task and print the score with its 95 % interval."""
    config = config_from_args(args, "evaluate")
    run_id = engine.start_run(config)
    print(f"started run {run_id}")
    code = _follow(engine, run_id)
    s = engine.get_run(run_id).summary
    if "score" in s:
        print(f"{s['task']} ({s['scorer']}): {s['score']:.3f}, 95 % interval {s['ci_low']:.3f}–{s['ci_high']:.3f}, "
              f"{s['examples']} examples, {s['scoring_s']} s on {s['backend']}")
    for a in engine.run_artifacts(run_id):
        print(f"{a.kind}: {a.path}")
    return code


def cmd_tasks_list(engine: Engine, args) -> int:
    _print_table([{"name": t.name, "scorer": t.scorer, "max_new_tokens": t.max_new_tokens,
                   "eval_path": t.eval_path} for t in engine.list_tasks()])
    return 0


def cmd_tasks_add(engine: Engine, args) -> int:
    import yaml

    with open(args.config, encoding="utf-8") as fh:
        task = Task.model_validate(yaml.safe_load(fh))
    count = engine.add_task(task, replace=args.replace)
    print(f"task '{task.name}': {count} examples, {task.scorer} scorer")
    return 0


def cmd_serve(engine: Engine, args) -> int:
    from .serve import serve

    key = args.api_key or os.environ.get("SLMOPS_API_KEY") or None
    if args.host not in {"127.0.0.1", "localhost", "::1"} and not key:
        print(f"warning: serving on {args.host} without an API key; anyone who can reach this port can use it",
              file=sys.stderr)
    with_adapters = f" with adapters {', '.join(args.adapter)}" if args.adapter else ""
    print(f"serving {', '.join(args.model)}{with_adapters} at http://{args.host}:{args.port}/v1", file=sys.stderr,
          flush=True)
    serve(engine, args.model, args.host, args.port, key, args.record_prompts, args.max_concurrency, args.max_queue,
          args.adapter)
    return 0


def cmd_runs_resume(engine: Engine, args) -> int:
    run_id = engine.resume_run(args.id, args.epochs)
    print(f"started run {run_id} (continues run {args.id})")
    return _follow(engine, run_id)


def cmd_tune(engine: Engine, args) -> int:
    """Start a study from a config (and follow it), or join a study that exists in a storage as one more worker
    (in this process: its trials run as runs of this workspace)."""
    from .configs import TuneConfig
    from .jobs.launch import run_in_process
    from .tuning import stored_config

    if args.action == "worker":
        if not (args.storage and args.study):
            raise InvalidInput("a worker needs --storage URL and --study NAME")
        config = stored_config(args.storage, args.study).model_copy(update={"study_name": args.study,
                                                                           "storage": args.storage})
        engine.check(config)
        run_id = run_in_process(engine, config)
        code = 0
    else:
        if not args.config:
            raise InvalidInput("give --config tune.yaml (kind: tune), or `tune worker --storage URL --study NAME`")
        config = load_config(args.config)
        if not isinstance(config, TuneConfig):
            raise InvalidInput(f"{args.config} is a {config.kind} config; a study's config has kind: tune")
        run_id = engine.start_run(config)
        print(f"started run {run_id}")
        code = _follow(engine, run_id)
    _print_table(engine.study_trials(run_id))
    print(json.dumps(engine.get_run(run_id).summary))
    return code
