"""Config of a hyperparameter study (job `tune`): a base fine-tune or distill config, a search space over its typed
fields, an objective the base job reports, Optuna's sampler and pruner, and a trial budget."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import JobConfig
from .training import DistillConfig, FineTuneConfig

BASE_CONFIGS: dict[str, type[JobConfig]] = {"finetune": FineTuneConfig, "distill": DistillConfig}


class SearchRange(BaseModel):
    """One field of the search space: a numeric range (`low`..`high`, optionally log-uniform or on a `step` grid)
    or a list of `choices`."""

    model_config = ConfigDict(extra="forbid")
    low: float | None = Field(default=None, description="Smallest value of a numeric range.")
    high: float | None = Field(default=None, description="Largest value of a numeric range.")
    log: bool = Field(default=False, description="Sample the range log-uniformly (both bounds > 0).")
    step: float | None = Field(default=None, gt=0, description="Grid step of the range (the grid sampler needs "
                               "a step or choices).")
    choices: list[Any] | None = Field(default=None, min_length=1, description="The values to pick from.")

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs bounds above 0 (low is {self.low})")
        if self.log and self.step is not None:
            raise ValueError("a log range cannot have a step")
        return self


# What a study optimises, per base job: (the summary key the base run reports, the direction). The trials report
# their eval loss during training to the pruner (negated when the objective is maximised).
TUNE_OBJECTIVES: dict[str, dict[str, tuple[str, str]]] = {
    "finetune": {"score": ("score_after", "maximize"), "eval_loss": ("eval_loss_after", "minimize")},
    "distill": {"task_score": ("task_score_student", "maximize"),
                "heldout_ppl": ("heldout_ppl_student", "minimize")},
}

DEFAULT_TUNE_SPACES: dict[str, dict[str, dict]] = {
    "finetune": {
        "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
        "lora_r": {"choices": [4, 8, 16]},
        "lora_alpha": {"choices": [8, 16, 32]},
        "lora_dropout": {"low": 0.0, "high": 0.1},
        "target_modules": {"choices": ["q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj"]},
    },
    "distill": {
        "learning_rate": {"low": 1e-4, "high": 1e-3, "log": True},
        "alpha": {"low": 0.0, "high": 1.0},
        "temperature": {"low": 1.0, "high": 4.0},
    },
}


class TuneConfig(JobConfig):
    """A hyperparameter study over fine-tune or distill: each trial is a run of the base job with sampled fields,
    scored on the objective; Optuna samples (TPE, random, grid) and prunes (median, successive halving)."""

    kind: ClassVar[str] = "tune"
    base_kind: Literal["finetune", "distill"] = Field(default="finetune", description="The job each trial runs.")
    base: dict[str, Any] = Field(description="The base job's config (its fields; the sampled ones are replaced).")
    space: dict[str, SearchRange] = Field(default_factory=dict, description="Field name → range or choices "
                                          "(empty: the default space of the base job).")
    objective: str = Field(default="", max_length=40, description="What the study optimises: score or eval_loss "
                           "(fine-tune), task_score or heldout_ppl (distill). Empty: the first of these.")
    sampler: Literal["tpe", "random", "grid"] = Field(default="tpe", description="tpe: Optuna's default; grid: "
                                                      "every combination of choices/steps.")
    pruner: Literal["halving", "median", "none"] = Field(
        default="halving", description="Stops trials whose eval loss lags: halving (successive halving) lets a third "
        "go on at each rung (eval_steps, 3×, 9× …); median stops those below the median at the same step.")
    pruner_startup_trials: int = Field(default=3, ge=0, le=1000, description="Trials that finish unpruned before "
                                       "the median pruner compares.")
    trials: int = Field(default=12, ge=1, le=10_000, description="Trials the study runs (finished or pruned; "
                        "a resumed study counts those it had).")
    minutes: float = Field(default=0.0, ge=0.0, le=100_000.0, description="Stop starting trials after this many "
                           "minutes (0: no limit).")
    parallel: int = Field(default=1, ge=1, le=64, description="Trials run at once (each also waits for a job "
                          "slot).")
    study_name: str = Field(default="", max_length=120, pattern=r"^[A-Za-z0-9._-]*$", description="The study's "
                            "name (empty: from the run). A study that exists in the storage is continued.")
    storage: str = Field(default="", max_length=1000, description="Optuna RDB URL (empty: the workspace's "
                         "tune/studies.db). PostgreSQL or MySQL to share a study between machines.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="The sampler's seed.")
    baseline_first: bool = Field(default=True, description="A new study's first trial runs the base config's own "
                                 "values (where they lie in the space): the result to beat, measured alike.")

    def model_ref(self) -> str | None:
        return self.base.get("teacher_model_id" if self.base_kind == "distill" else "model_id")

    def objective_key(self) -> tuple[str, str, str]:
        """(objective name, the base run's summary key, direction)."""
        name = self.objective or next(iter(TUNE_OBJECTIVES[self.base_kind]))
        key, direction = TUNE_OBJECTIVES[self.base_kind][name]
        return name, key, direction

    def search_space(self) -> dict[str, SearchRange]:
        if self.space:
            return self.space
        return {k: SearchRange(**v) for k, v in DEFAULT_TUNE_SPACES[self.base_kind].items()}

    @model_validator(mode="after")
    def _known_objective_and_valid_base(self):
        names = TUNE_OBJECTIVES[self.base_kind]
        if self.objective and self.objective not in names:
            raise ValueError(f"objective '{self.objective}' is not reported by {self.base_kind} runs: use "
                             f"{' or '.join(names)}")
        # the base is kept as its job validated it (relative paths made absolute here, where they were given)
        base = BASE_CONFIGS[self.base_kind].model_validate(self.base)
        self.base = base.model_dump(mode="json", exclude_unset=True)
        return self
