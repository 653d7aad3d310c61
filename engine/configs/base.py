"""The base of every job config, chat's sampling settings, and the bundled prompt files."""
from __future__ import annotations

import os
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class JobConfig(BaseModel):
    """Base of every job config: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: ClassVar[str]  # the job kind's name; engine/jobs/registry.py declares the rest of the kind

    def model_ref(self) -> str | None:
        """The registered model this run is about (shown in the run history)."""
        return getattr(self, "model_id", None)

    def new_model_ids(self) -> list[str]:
        """The names this run will register its models under, when known before it starts."""
        return []



class GenerationParams(BaseModel):
    """Sampling settings for chat. temperature 0 means greedy decoding."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str = Field(default="", max_length=20_000, description="Optional system message.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 = greedy; higher = more random.")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, description="Nucleus sampling: keep this share of mass.")
    max_new_tokens: int = Field(default=256, ge=1, le=4096, description="Longest reply, in tokens.")



PROMPTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets",
                           "prompts")
SEED_PROMPTS = os.path.join(PROMPTS_DIR, "seed_prompts.jsonl")
HELDOUT_PROMPTS = os.path.join(PROMPTS_DIR, "seed_prompts.heldout.jsonl")
