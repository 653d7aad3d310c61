"""Typed job configs: one pydantic model per job kind. They give the CLI, the form widgets and the stored record."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobConfig(BaseModel):
    """Base of every job config: unknown fields are refused, and each kind names the function that runs it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: ClassVar[str]
    target: ClassVar[str]  # "module:function" the worker process calls with (context, config)

    def model_ref(self) -> str | None:
        """The registered model this run is about (shown in the run history)."""
        return getattr(self, "model_id", None)


class PrepareModelConfig(JobConfig):
    """Bring a model into the workspace as a safetensors folder: convert a GGUF file, or download from the Hub."""

    kind: ClassVar[str] = "prepare_model"
    target: ClassVar[str] = "engine.jobs.prepare:run"
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
    target: ClassVar[str] = "engine.jobs.selftest:run"
    model_id: str = Field(description="Registered model to test.")
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SELFTEST_PROMPTS), min_length=1,
                               max_length=50, description="User messages to answer, one generation each.")
    max_new_tokens: int = Field(default=32, ge=1, le=1024, description="Tokens generated per prompt.")
    threads: int = Field(default=0, ge=0, le=256, description="torch threads (0: the library default).")


class GenerationParams(BaseModel):
    """Sampling settings for chat. temperature 0 means greedy decoding."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str = Field(default="", max_length=20_000, description="Optional system message.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 = greedy; higher = more random.")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, description="Nucleus sampling: keep this share of mass.")
    max_new_tokens: int = Field(default=256, ge=1, le=4096, description="Longest reply, in tokens.")


JOB_CONFIGS: dict[str, type[JobConfig]] = {c.kind: c for c in (PrepareModelConfig, SelfTestConfig)}
