"""Configs of the small job kinds: preparing a model, the self-test, the benchmark and task evaluation."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from .base import HELDOUT_PROMPTS, JobConfig


class PrepareModelConfig(JobConfig):
    """Bring a model into the workspace as a safetensors folder: convert a GGUF file, or download from the Hub."""

    kind: ClassVar[str] = "prepare_model"
    model_id: str = Field(description="Name the prepared model is registered under.")
    source: Literal["gguf", "hub"] = Field(description="gguf: convert a local .gguf file; hub: download a Hub repo.")
    source_ref: str = Field(min_length=1, description="Path of the .gguf file, or the Hub repo id (owner/name).")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit); Hub only.")


DEFAULT_SELFTEST_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three primary colours.",
]


class SelfTestConfig(JobConfig):
    """A quick generation self-test: load a model, answer a few prompts greedily, record load time and tokens/s."""

    kind: ClassVar[str] = "selftest"
    model_id: str = Field(description="Registered model to test.")
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SELFTEST_PROMPTS), min_length=1,
                               max_length=50, description="User messages to answer, one generation each.")
    max_new_tokens: int = Field(default=32, ge=1, le=1024, description="Tokens generated per prompt.")
    threads: int = Field(default=0, ge=0, le=256, description="torch threads (0: the library default).")



PROMPT_LENGTHS = {"short": 0, "medium": 256, "long": 1024}  # tokens of a passage put before each prompt
GEN_LENGTHS = {"short": 32, "medium": 64, "long": 256}


class BenchmarkConfig(JobConfig):
    """Speed, memory and quality of several models, each measured in a fresh process (their timed repetitions
    interleaved), scored the same way."""

    kind: ClassVar[str] = "benchmark"
    model_ids: list[str] = Field(min_length=1, max_length=32, description="Registered models of any format.")
    prompts_path: str = Field(default=HELDOUT_PROMPTS, description="Prompt set: JSONL with a 'prompt' field "
                              "(or any dataset whose user prompts are reused).")
    prompt_count: int = Field(default=2, ge=1, le=100, description="Prompts timed per repetition.")
    prompt_length: Literal["short", "medium", "long"] = Field(
        default="short", description="short: the prompt alone; medium/long: after a ~256/~1024-token passage.")
    gen_length: Literal["short", "medium", "long"] = Field(default="medium", description="Tokens generated per "
                                                           "call: 32 / 64 / 256 (EOS ignored).")
    repetitions: int = Field(default=6, ge=1, le=100, description="Timed repetitions of the prompt set, at least (six "
                             "give a 95 % interval for the median).")
    time_budget_s: float = Field(default=30.0, ge=0, le=3600, description="Per model: after the repetitions, more "
                                 "until decode speed's 95 % interval is within ±target_half_width of its median, or "
                                 "until this many seconds of timing (0: exactly the repetitions).")
    target_half_width: float = Field(default=0.03, gt=0, le=0.5, description="Precision wanted: the interval's "
                                     "half-width relative to the median (0.03: ±3 %).")
    warmup: int = Field(default=1, ge=0, le=10, description="Untimed calls first (the prompts in turn).")
    interleave: bool = Field(default=True, description="Several models: their timed repetitions take turns (each "
                             "model in its own process, all loaded at once), so a machine's drift hits them alike. "
                             "Off: one model after the other (less memory).")
    threads: int = Field(default=2, ge=0, le=256, description="Threads per model (0: library default).")
    ppl_tokens: int = Field(default=2048, ge=0, le=65_536, description="Tokens of the standard text for "
                            "perplexity (0: skip).")
    mc_questions: int = Field(default=0, ge=0, le=100_000, description="Multiple-choice questions scored (0: all "
                              "of assets/eval/mc_questions.jsonl; skip with mc: false).")
    mc: bool = Field(default=True, description="Score the bundled multiple-choice set.")
    agreement_prompts: int = Field(default=8, ge=0, le=1000, description="Prompts for agreement with the "
                                   "model's source/teacher (0: skip).")
    agreement_tokens: int = Field(default=16, ge=1, le=256, description="Greedy tokens that must match.")
    task: str = Field(default="", max_length=80, description="A stored task every model is scored on (greedy "
                      "answers to its evaluation set; the score with its 95 % interval). Empty: no task score.")
    task_limit: int = Field(default=0, ge=0, le=100_000, description="Score only the task's first N examples "
                            "(0: all).")

    def model_ref(self) -> str | None:
        return self.model_ids[0]

    @field_validator("model_ids")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(v.strip() for v in value if v.strip()))


class EvaluateConfig(JobConfig):
    """Score a model on a task: greedy answers to the task's evaluation set, each compared with its reference by
    the task's scorer; the score with a 95 % interval, and every example's answer."""

    kind: ClassVar[str] = "evaluate"
    model_id: str = Field(description="Registered model to score (any format).")
    task: str = Field(min_length=1, description="Name of a stored task (the bundled one: request_to_json).")
    limit: int = Field(default=0, ge=0, le=1_000_000, description="Score only the first N examples (0: all).")
    backend: Literal["auto", "transformers", "onnx"] = Field(
        default="auto", description="auto: an ONNX export scores itself; a full model or adapter scores on its "
        "fastest verified ONNX export when it has one (the summary names it), else on transformers.")
    threads: int = Field(default=2, ge=0, le=256, description="Threads (0: the library default).")
