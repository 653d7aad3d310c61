"""`python -m engine`: the headless client. This file parses the flags; every command (engine/cli_commands.py) is a
thin call into the Engine API."""
from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from .api import Engine
from .cli_flags import config_flags
from .cli_commands import (cmd_benchmark, cmd_chat, cmd_eval, cmd_models_add, cmd_models_default, cmd_models_delete,
                           cmd_models_list, cmd_quantize, cmd_run, cmd_runs_cancel, cmd_runs_delete, cmd_runs_list,
                           cmd_runs_olive_config, cmd_runs_resume, cmd_runs_show, cmd_serve, cmd_tasks_add,
                           cmd_tasks_list, cmd_training_job, cmd_tune)
from .configs import (BenchmarkConfig, DistillConfig, EvaluateConfig, FineTuneConfig, GenerationParams, GgufConfig,
                      QuantizeConfig)
from .errors import SlmopsError
from .jobs.registry import JOB_KINDS
from .serve_monitor import MAX_CONCURRENCY, MAX_QUEUE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="SLMOps Studio, headless. The workspace "
                                     "is $SLMOPS_HOME (default: workspace/ beside app.py).")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list, add, delete models").add_subparsers(dest="action", required=True)
    p = models.add_parser("list", help="registered models")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser("add", help="register a local HF folder, a .gguf file or a Hub id (online only)")
    p.add_argument("ref", help="folder, .gguf file, or owner/name")
    p.add_argument("--name", help="name to register under (default: from the path or id)")
    p.add_argument("--source", choices=["auto", "local", "gguf", "hub"], default="auto")
    p.add_argument("--no-wait", action="store_true", help="return once a preparation run has started")
    p.set_defaults(func=cmd_models_add)
    p = models.add_parser("default", help="prepare the bundled SmolLM2 model (once)")
    p.set_defaults(func=cmd_models_default)
    p = models.add_parser("delete", help="delete a model (files only when the workspace owns them)")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_delete)

    p = sub.add_parser("chat", help="one chat turn, streamed to stdout")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    defaults = GenerationParams()
    p.add_argument("--system", default=defaults.system_prompt)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default here) = greedy")
    p.add_argument("--top-p", type=float, default=defaults.top_p)
    p.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    p.set_defaults(func=cmd_chat)

    runs = sub.add_parser("runs", help="run history").add_subparsers(dest="action", required=True)
    p = runs.add_parser("list", help="recent runs")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_runs_list)
    for name, func, text in (("show", cmd_runs_show, "config, metrics, artifacts and log of a run"),
                             ("cancel", cmd_runs_cancel, "ask an active run to stop"),
                             ("delete", cmd_runs_delete, "delete a finished run's history")):
        p = runs.add_parser(name, help=text)
        p.add_argument("id", type=int)
        if name == "show":
            p.add_argument("--tail", type=int, default=50, help="log lines to show")
        p.set_defaults(func=func)

    p = runs.add_parser("olive-config", help="Olive's config (and command) that repeats a fine-tune or quantize run "
                                             "with `olive run`")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_runs_olive_config)

    p = runs.add_parser("resume", help="continue a fine-tune run from its last checkpoint, as a new run")
    p.add_argument("id", type=int)
    p.add_argument("--epochs", type=float, default=None, help="more epochs (for a run that finished)")
    p.set_defaults(func=cmd_runs_resume)

    for name, cls, text in (
            ("finetune", FineTuneConfig, "fine-tune from flags and/or a YAML/JSON config; data-parallel under "
                                         "torchrun"),
            ("distill", DistillConfig, "distillation from flags and/or a YAML/JSON config (stage 2; a config file "
                                       "with kind: generate_data runs stage 1); data-parallel under torchrun")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help="YAML/JSON config; flags override its fields")
        p.add_argument("--in-process", action="store_true", help="run here instead of in a worker process")
        config_flags(p, cls, {"model_id": ("--model",), "teacher_model_id": ("--teacher",),
                              "train_path": ("--train",)})
        p.set_defaults(func=cmd_training_job)

    p = sub.add_parser("quantize", help="export a model to ONNX Runtime GenAI (int4 affine by default) and verify it")
    p.add_argument("--config", help="YAML/JSON config (kind: quantize); flags override its fields")
    config_flags(p, QuantizeConfig, {"model_id": ("--model",), "output_name": ("--name",)})
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("gguf", help="write a model as GGUF (llama.cpp, Ollama, LM Studio) with an Ollama Modelfile, "
                       "verify it with transformers' GGUF reader")
    p.add_argument("--config", help="YAML/JSON config (kind: gguf); flags override its fields")
    config_flags(p, GgufConfig, {"model_id": ("--model",), "output_name": ("--name",), "gguf_type": ("--type",)})
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("benchmark", help="speed, memory and quality of models, each in a fresh process")
    p.add_argument("--config", help="YAML/JSON config (kind: benchmark); flags override its fields")
    config_flags(p, BenchmarkConfig, {"model_ids": ("--model",), "repetitions": ("--reps",)})
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("eval", help="score a model on a task (score, 95 %% interval, every answer in a JSONL file)")
    p.add_argument("--config", help="YAML/JSON config (kind: evaluate); flags override its fields")
    config_flags(p, EvaluateConfig, {"model_id": ("--model",)})
    p.set_defaults(func=cmd_eval)

    tasks = sub.add_parser("tasks", help="list or add tasks").add_subparsers(dest="action", required=True)
    p = tasks.add_parser("list", help="stored tasks")
    p.set_defaults(func=cmd_tasks_list)
    p = tasks.add_parser("add", help="store a task from a YAML/JSON file (fields of engine.tasks.Task)")
    p.add_argument("--config", required=True)
    p.add_argument("--replace", action="store_true", help="replace a task of the same name")
    p.set_defaults(func=cmd_tasks_add)

    p = sub.add_parser("serve", help="OpenAI-compatible API (/v1/models, /v1/chat/completions) for models")
    p.add_argument("--model", action="append", required=True, help="model to serve (repeat for several); "
                   "BASE:ADAPTER serves one adapter of an export made with adapters")
    p.add_argument("--adapter", action="append", default=[], help="serve this adapter of the --model exports that "
                   "have it, as BASE:ADAPTER over the one loaded base (repeat for several)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require this key as 'Authorization: Bearer KEY' "
                   "(default: $SLMOPS_API_KEY, else none)")
    p.add_argument("--record-prompts", action="store_true", help="keep each request's last message in its record "
                   "(default: tokens and timings only)")
    p.add_argument("--max-concurrency", type=int, default=MAX_CONCURRENCY, help="requests generating at once; "
                   f"more wait in a queue (default {MAX_CONCURRENCY})")
    p.add_argument("--max-queue", type=int, default=MAX_QUEUE, help="requests waiting at most; past it a request "
                   f"gets 429 with Retry-After (default {MAX_QUEUE})")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("tune", help="a hyperparameter study (Optuna) over fine-tune or distill; `tune worker` joins "
                       "a study from another process or machine")
    p.add_argument("action", nargs="?", choices=["worker"], help="worker: run trials of an existing study")
    p.add_argument("--config", help="YAML/JSON config with kind: tune")
    p.add_argument("--storage", help="the study's RDB URL (worker)")
    p.add_argument("--study", help="the study's name (worker)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("run", help=f"start a job from a YAML/JSON config ({', '.join(JOB_KINDS)}) and follow it")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    read_only = (args.command, getattr(args, "action", None)) in {("models", "list"), ("runs", "list"),
                                                                   ("runs", "show")}
    try:
        engine = Engine(recover=not read_only)
        return args.func(engine, args)
    except SlmopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'} (flag --"
                             f"{str(e['loc'][0] if e['loc'] else '').replace('_', '-')}): {e['msg']}"
                             for e in exc.errors())
        print(f"error: invalid config: {problems}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
