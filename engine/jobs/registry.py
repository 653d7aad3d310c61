"""The job kinds, each declared once: its config, its recipe, its up-front check, whether it resumes, whether it
waits for a job slot, and the summary figures a run shows. The worker, `Engine`, the CLI and the UI read this.

Adding a kind: its config (engine/configs/), its recipe (engine/jobs/<kind>.py: `run(ctx, config)`), one line
here, and its tab.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import checks
from ..configs import (AdapterSetConfig, AddAdaptersConfig, BenchmarkConfig, DistillConfig, DistillSweepConfig,
                       EvaluateConfig, FineTuneConfig, GenerateDataConfig, GgufConfig, JobConfig, PrepareModelConfig,
                       QuantizeConfig, QuantizeSweepConfig, SelfTestConfig)
from ..configs.tune import TuneConfig
from ..errors import InvalidInput
from ..tuning import check_tune
from . import benchmark, distill, evaluate, finetune, generate, gguf, prepare, quantize, selftest, tune


@dataclass(frozen=True)
class JobKind:
    config: type[JobConfig]
    run: Callable  # the recipe: run(ctx: JobContext, config) in the worker process
    check: Callable | None = None  # check(engine, config) before a run starts: raises InvalidInput with the fix
    resumable: bool = False  # a stopped run continues from what it left (checkpoints, rows written)
    exclusive: bool = False  # waits for one of Settings.max_parallel_jobs slots (training, export, benchmark)
    summary: tuple[tuple[str, str], ...] = ()  # (summary key, label with unit) shown first, in this order

    @property
    def name(self) -> str:
        return self.config.kind

    @property
    def target(self) -> str:
        """Where the recipe lives, stored with each run (a worker imports it for kinds registered outside)."""
        return f"{self.run.__module__}:{self.run.__qualname__}"


JOB_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add a kind (the engine's own below; tests and plugins register theirs from the module of their recipe)."""
    JOB_KINDS[kind.name] = kind
    return kind


def job_kind(name: str) -> JobKind:
    try:
        return JOB_KINDS[name]
    except KeyError:
        raise InvalidInput(f"Unknown job kind '{name}': use one of {', '.join(JOB_KINDS)}.") from None


for _kind in (
    JobKind(PrepareModelConfig, prepare.run),
    JobKind(SelfTestConfig, selftest.run),
    JobKind(FineTuneConfig, finetune.run, checks.check_finetune, resumable=True, exclusive=True,
            summary=(("score_before", "held-out score before"), ("score_after", "held-out score after"),
                     ("eval_loss_before", "eval loss before"), ("eval_loss_after", "eval loss after"),
                     ("wall_s", "wall time (s)"))),
    JobKind(AdapterSetConfig, finetune.run_set, checks.check_adapter_set, exclusive=True,
            summary=(("base", "base model"), ("adapters_done", "adapters trained"), ("wall_s", "wall time (s)"))),
    JobKind(GenerateDataConfig, generate.run, checks.check_generate, resumable=True, exclusive=True,
            summary=(("generated", "answers generated"), ("kept", "answers kept"),
                     ("teacher_tokens_per_s", "teacher tokens/s"))),
    JobKind(DistillConfig, distill.run, checks.check_distill, resumable=True, exclusive=True,
            summary=(("task_retention", "task retention (student ÷ teacher)"),
                     ("task_score_teacher", "teacher task score"), ("task_score_student", "student task score"),
                     ("params_ratio", "parameters × teacher"), ("decode_speedup", "decode × teacher"),
                     ("layers", "teacher layers kept"), ("wall_s", "wall time (s)"))),
    JobKind(DistillSweepConfig, distill.run_sweep, checks.check_distill_sweep, exclusive=True,
            summary=(("smallest_at_90", "smallest student keeping ≥ 90 % of the task"),
                     ("task_score_teacher", "teacher task score"), ("wall_s", "wall time (s)"))),
    JobKind(QuantizeConfig, quantize.run, checks.check_quantize, exclusive=True,
            summary=(("output", "export"), ("variant", "variant"), ("size_mb", "size (MB)"),
                     ("size_ratio", "size × source"), ("ppl_ratio", "perplexity × source"),
                     ("first_token_agreement", "first-token agreement"), ("decode_tok_s", "decode tokens/s"),
                     ("answer", "answer to 'capital of France?'"))),
    JobKind(AddAdaptersConfig, quantize.run_add_adapters, checks.check_add_adapters, exclusive=True,
            summary=(("output", "export"),)),
    JobKind(QuantizeSweepConfig, quantize.run_sweep, checks.check_quantize_sweep, exclusive=True,
            summary=(("chosen", "chosen variant"), ("output", "export"))),
    JobKind(GgufConfig, gguf.run, checks.check_gguf, exclusive=True,
            summary=(("output", "export"), ("gguf_type", "type"), ("size_mb", "size (MB)"),
                     ("size_ratio", "size × source"), ("ppl_ratio", "perplexity × source"),
                     ("top1_agreement", "top-1 agreement on the standard text"),
                     ("first_token_agreement", "first-token agreement"), ("answer", "answer to 'capital of France?'"))),
    JobKind(BenchmarkConfig, benchmark.run, checks.check_benchmark, exclusive=True),
    JobKind(EvaluateConfig, evaluate.run, checks.check_evaluate, exclusive=True,
            summary=(("task", "task"), ("score", "score"), ("ci_low", "95 % interval, low"), ("ci_high", "high"),
                     ("examples", "examples"), ("backend", "scored on"), ("scoring_s", "scoring time (s)"))),
    # the study coordinates and waits: its trials take the job slots, so it does not hold one
    JobKind(TuneConfig, tune.run, check_tune, resumable=True,
            summary=(("study", "study"), ("objective", "objective"), ("best_value", "best value"),
                     ("best_trial", "best trial"), ("best_run", "best trial's run"), ("complete", "trials finished"),
                     ("pruned", "trials pruned"), ("failed", "trials failed"),
                     ("steps", "training steps, all trials"), ("wall_s", "wall time (s)"))),
):
    register(_kind)
