"""Configs of the jobs that train: fine-tune, and the two distillation stages (and their size sweep)."""
from __future__ import annotations

import copy
import math
import os
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .base import SEED_PROMPTS, JobConfig


def retuned(cls, name: str, default):
    """`cls`'s field `name` — bounds, description and all — with another default: a job retunes a shared field
    without restating it (so the two cannot drift)."""
    field = copy.copy(cls.model_fields[name])
    field.default = default
    return field


def data_path(value: str | None, info) -> str | None:
    """Relative paths are taken from where the config is made, so the worker (another cwd) finds them."""
    value = (value or "").strip() or None
    if value is None and info.field_name == "train_path":
        raise ValueError("give the path of a training file (.jsonl, .json, .csv or .parquet)")
    return os.path.abspath(os.path.expanduser(value)) if value else value


class TrainingConfig(JobConfig):
    """The fields every Trainer-based job shares (data, schedule, checkpoints); jobs override defaults."""

    train_path: str = Field(min_length=1, description="Training data: .jsonl, .json, .csv or .parquet.")
    eval_path: str | None = Field(default=None, description="Separate eval file; empty: split off eval_ratio.")
    eval_ratio: float = Field(default=0.15, gt=0.0, le=0.5, description="Share of the train file held out for "
                              "eval when there is no eval file.")
    columns: dict[str, str] = Field(default_factory=dict, description="Column mapping when names differ, e.g. "
                                    "{'prompt': 'question', 'completion': 'answer'}.")
    # Fine-tuning defaults, measured on the bundled SmolLM2 + example dataset (2 cores): 2 epochs at 1e-3 take the
    # held-out JSON match from 0/100 to 88/100 with LoRA r 8 on q/v: 200 steps, 22-25 minutes with the scoring
    # before and after (benchmarks/newcomer_walk.py, 2026-12-03); the loss is flat after about 50 steps.
    epochs: float = Field(default=2.0, gt=0.0, le=100.0, description="Passes over the training data.")
    max_steps: int = Field(default=0, ge=0, le=1_000_000, description="Stop after this many optimizer steps "
                           "(0: use epochs).")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule.")
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=0.5, description="Share of steps spent warming up.")
    batch_size: int = Field(default=4, ge=1, le=512, description="Examples per step per process.")
    grad_accum: int = Field(default=1, ge=1, le=1024, description="Steps accumulated per optimizer update.")
    max_length: int = Field(default=128, ge=8, le=32768, description="Tokens per example (longer ones are cut).")
    packing: bool = Field(default=False, description="Concatenate examples into full max_length blocks.")
    eval_steps: int = Field(default=25, ge=1, le=1_000_000, description="Evaluate every N optimizer steps.")
    save_steps: int = Field(default=25, ge=1, le=1_000_000, description="Checkpoint every N optimizer steps.")
    save_total_limit: int = Field(default=2, ge=1, le=50, description="Checkpoints kept (oldest deleted).")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Seed for init, shuffling and the split.")
    output_name: str | None = Field(default=None, description="Name of the produced model (default: from the run).")
    resume_from_run: int | None = Field(default=None, ge=1, description="Continue from this run's last checkpoint.")
    threads: int = Field(default=0, ge=0, le=256, description="torch threads (0: the library default).")

    def optimizer_steps(self, train_examples: int) -> int:
        """The optimizer steps a run takes: max_steps, else its epochs over `train_examples` (per process)."""
        return self.max_steps or math.ceil(self.epochs * train_examples / (self.batch_size * self.grad_accum))

    @field_validator("train_path", "eval_path")
    @classmethod
    def _absolute(cls, value: str | None, info) -> str | None:
        return data_path(value, info)


class FineTuneConfig(TrainingConfig):
    """Fine-tune a registered model on a dataset with LoRA or full fine-tuning (HF Trainer + peft)."""

    kind: ClassVar[str] = "finetune"
    model_id: str = Field(description="Registered base model (safetensors folder) to fine-tune.")
    method: Literal["lora", "full", "qlora"] = Field(default="lora", description="lora: train small adapters; "
                                                     "full: all weights; qlora: 4-bit base (CUDA + bitsandbytes).")
    backend: Literal["transformers", "olive"] = Field(
        default="transformers", description="transformers: our Trainer loop (prompt tokens masked); olive: "
        "Microsoft Olive's `olive finetune` in a child process (LoRA/QLoRA; it trains on the whole chat text), on "
        "the same data split, scored the same way.")
    lora_r: int = Field(default=8, ge=1, le=256, description="LoRA rank.")
    lora_alpha: int = Field(default=16, ge=1, le=1024, description="LoRA scaling (alpha / r multiplies updates).")
    lora_dropout: float = Field(default=0.05, ge=0.0, le=0.9, description="Dropout on the LoRA path.")
    target_modules: str = Field(default="q_proj,v_proj", min_length=1, description="Comma-separated module names, "
                                "or 'all-linear'.")
    score: Literal["auto", "json", "exact", "none"] = Field(default="auto", description="Held-out score: json "
                                                            "(parsed JSON equal), exact (text equal), auto: json "
                                                            "when references are JSON objects.")
    eval_max_examples: int = Field(default=100, ge=0, le=100_000, description="Held-out examples scored by "
                                   "generation (0: skip the score).")
    eval_max_new_tokens: int = Field(default=64, ge=1, le=2048, description="Tokens generated per scored example.")
    score_before: bool = Field(default=True, description="Also score the base before training (a study's trials "
                               "skip it: their base is the same).")
    merge: bool = Field(default=False, description="Also save a merged model (LoRA folded into the weights).")

    def new_model_ids(self) -> list[str]:
        if not self.output_name:
            return []
        merged = self.merge and self.method != "full"
        return [self.output_name] + ([f"{self.output_name}-merged"] if merged else [])


class AdapterSpec(BaseModel):
    """One adapter of a set: its name, its data, and the task it is for."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120, description="Name the adapter is registered under.")
    train_path: str = Field(min_length=1, description="Its training data: .jsonl, .json, .csv or .parquet.")
    eval_path: str | None = Field(default=None, description="Held-out file; empty: the task's evaluation set when "
                                  "a task is named, else a split of the training file.")
    task: str = Field(default="", max_length=80, description="A stored task: the adapter (and its base) are scored "
                      "on it with the task's scorer. Empty: the held-out split's score.")
    target_modules: str = Field(default="", max_length=2000, description="This adapter's LoRA target modules "
                                "(empty: the set's).")

    @field_validator("train_path", "eval_path")
    @classmethod
    def _absolute(cls, value: str | None, info) -> str | None:
        return data_path(value, info)


class AdapterSetConfig(FineTuneConfig):
    """Several LoRA adapters on one base, e.g. one per task, trained one after the other with the same settings
    (the fine-tune form's) and each scored on its own task: one adapter per entry of `adapters`."""

    kind: ClassVar[str] = "adapter_set"
    train_path: str = Field(default="", description="Not used: each adapter names its own training file.")
    eval_path: str | None = Field(default=None, description="Not used: each adapter names its own held-out file.")
    output_name: str | None = Field(default=None, description="Not used: each adapter is registered by its name.")
    method: Literal["lora", "qlora"] = Field(default="lora", description="An adapter set trains adapters: lora, "
                                             "or qlora (4-bit base: CUDA + bitsandbytes).")
    adapters: list[AdapterSpec] = Field(min_length=1, max_length=8, description="The adapters: name, training file, "
                                        "optional eval file and task.")

    @field_validator("train_path", "eval_path", "output_name")
    @classmethod
    def _absolute(cls, value: str | None, info) -> str | None:  # (overrides the fine-tune's: the set's own are unused)
        return "" if info.field_name == "train_path" else None

    @model_validator(mode="after")
    def _adapters(self):
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapter names repeat ({', '.join(names)}): give each adapter its own name")
        return self

    def new_model_ids(self) -> list[str]:
        return [name for a in self.adapters for name in self.adapter_config(a).new_model_ids()]

    def adapter_config(self, spec: AdapterSpec, task_eval_path: str | None = None) -> FineTuneConfig:
        """The fine-tune of one adapter. With a task, its evaluation set is the held-out file (never trained on)
        and the job scores on the task itself, so the fine-tune only measures eval loss."""
        data = self.model_dump(exclude={"adapters"})
        data.update(train_path=spec.train_path, eval_path=spec.eval_path or task_eval_path, output_name=spec.name,
                    resume_from_run=None, target_modules=spec.target_modules.strip() or self.target_modules)
        if spec.task:
            data.update(eval_max_examples=0, score_before=False)
        return FineTuneConfig(**data)


class GenerateDataConfig(JobConfig):
    """Distillation stage 1: the teacher answers a prompt set; filtered answers become a chat dataset."""

    kind: ClassVar[str] = "generate_data"
    teacher_model_id: str = Field(description="Registered model that writes the answers.")
    prompts_path: str = Field(default=SEED_PROMPTS, description="Prompts: JSONL with a 'prompt' field, or any "
                              "dataset (chat, Alpaca, prompt/completion) whose user prompts are reused.")
    system_prompt: str = Field(default="", max_length=20_000, description="Optional system message.")
    few_shot: list[dict[str, str]] = Field(default_factory=list, description="Example turns shown before each "
                                           "prompt: [{'prompt': ..., 'response': ...}].")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=96, ge=1, le=4096, description="Longest answer, in tokens.")
    n_per_prompt: int = Field(default=1, ge=1, le=16, description="Answers sampled per prompt.")
    batch_size: int = Field(default=16, ge=1, le=256, description="Prompts generated together.")
    max_prompts: int = Field(default=0, ge=0, le=1_000_000, description="Use only the first N prompts (0: all).")
    drop_truncated: bool = Field(default=True, description="Drop answers cut off at max_new_tokens.")
    dedupe: bool = Field(default=True, description="Drop repeated (prompt, answer) pairs.")
    min_chars: int = Field(default=2, ge=0, le=100_000, description="Drop answers shorter than this.")
    max_chars: int = Field(default=4000, ge=1, le=1_000_000, description="Drop answers longer than this.")
    regex: str = Field(default="", max_length=1000, description="Keep only answers matching this regex.")
    require_json: bool = Field(default=False, description="Keep only answers that parse as JSON.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Sampling seed.")
    output_name: str | None = Field(default=None, description="Dataset name (default: from the run).")
    resume_from_run: int | None = Field(default=None, ge=1, description="Keep that run's rows; do the rest.")
    teacher_backend: Literal["auto", "transformers", "onnx"] = Field(
        default="auto", description="auto: the teacher's fastest verified ONNX Runtime GenAI export that keeps "
        "perplexity within ×1.05 when one exists, else transformers.")

    def model_ref(self) -> str | None:
        return self.teacher_model_id

    @field_validator("prompts_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return os.path.abspath(os.path.expanduser(value.strip()))


class DistillConfig(TrainingConfig):
    """Distillation stage 2: train a student on the teacher's data with α·KL(teacher‖student) + (1−α)·CE."""

    kind: ClassVar[str] = "distill"
    teacher_model_id: str = Field(description="Registered teacher (full model).")
    train_path: str = Field(min_length=1, description="The teacher's dataset (stage 1 output, or any chat data).")
    student: Literal["derived", "existing"] = Field(default="derived", description="derived: keep some of the "
                                                    "teacher's layers; existing: a registered model.")
    keep_layers: int = Field(default=10, ge=1, le=512, description="Teacher layers the derived student keeps.")
    layer_selection: Literal["importance", "even"] = Field(
        default="importance", description="Which layers a derived student keeps. importance: drop, in rounds, the "
        "layers whose removal raises the teacher's loss on the first training examples least (measured at the "
        "start); even: evenly spaced, first and last included.")
    calibration_examples: int = Field(default=16, ge=1, le=1024, description="Training examples that measure "
                                      "layer importance.")
    layers: str = Field(default="", max_length=2000, description="Exact teacher layer indices to keep, "
                        "comma-separated (overrides keep_layers and layer_selection).")
    student_model_id: str | None = Field(default=None, description="Registered student (student = existing).")
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight of the KD term (0: cross-entropy only).")
    temperature: float = Field(default=2.0, ge=0.5, le=20.0, description="Softmax temperature of the KD term.")
    teacher_top_k: int = Field(default=64, ge=0, le=4096, description="The teacher's answer is computed once, "
                               "before training: its top-k tokens at each response position (the rest as one "
                               "bucket), so a step needs no teacher pass. 0: run the teacher every step (exact KL).")
    # distillation's own defaults: a fresh (layer-dropped) student needs more steps at a lower rate than LoRA.
    # Measured (benchmarks/distill_recipe.py, request_to_json, teacher 0.880): 10 of 30 layers by importance,
    # 2 epochs → 0.320 (36 % of the teacher), 6 epochs → 0.830-0.870 (94-99 %, three runs).
    epochs: float = retuned(TrainingConfig, "epochs", 6.0)
    learning_rate: float = retuned(TrainingConfig, "learning_rate", 5e-4)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = retuned(
        TrainingConfig, "lr_scheduler", "cosine")
    warmup_ratio: float = retuned(TrainingConfig, "warmup_ratio", 0.03)
    batch_size: int = retuned(TrainingConfig, "batch_size", 8)
    max_length: int = retuned(TrainingConfig, "max_length", 160)
    eval_steps: int = retuned(TrainingConfig, "eval_steps", 50)
    save_steps: int = retuned(TrainingConfig, "save_steps", 50)
    agreement_tokens: int = Field(default=16, ge=1, le=256, description="Agreement: greedy student output equals "
                                  "the teacher's first N tokens.")
    eval_max_examples: int = Field(default=60, ge=0, le=100_000, description="Held-out prompts for agreement.")
    general_ppl_tokens: int = Field(default=4096, ge=0, le=1_000_000, description="Tokens of the standard text "
                                    "(Python's own docs) for general perplexity (0: skip).")
    task: str = Field(default="", max_length=80, description="A stored task: teacher and student are scored on it "
                      "after training (task retention = student score ÷ teacher score). Empty: no task score.")
    task_limit: int = Field(default=0, ge=0, le=100_000, description="Score only the task's first N examples "
                            "(0: all).")

    def model_ref(self) -> str | None:
        return self.teacher_model_id

    def new_model_ids(self) -> list[str]:
        return [self.output_name] if self.output_name else []

    def measures_importance(self) -> bool:
        """The derived student's layers are chosen by measured importance (at the start of the run)."""
        return self.student == "derived" and not self.layers.strip() and self.layer_selection == "importance"

    def layer_indices(self, teacher_layers: int) -> list[int]:
        """The teacher layers the derived student keeps: explicit, or evenly spaced (first and last included).
        With measured importance the layers are known only at run time; this gives the same count."""
        if self.layers.strip():
            parts = [x for x in self.layers.replace(" ", "").split(",") if x]
            picked = [int(x) for x in parts if x.isdigit()]
            bad = [i for i in picked if not 0 <= i < teacher_layers]
            if bad or len(picked) != len(parts) or len(set(picked)) != len(picked):
                raise ValueError(f"layers {self.layers!r}: use distinct indices 0..{teacher_layers - 1}")
            return sorted(picked)
        k = min(self.keep_layers, teacher_layers)
        if k == 1:
            return [0]
        return sorted({round(i * (teacher_layers - 1) / (k - 1)) for i in range(k)})


class DistillSweepConfig(DistillConfig):
    """Students of several sizes from one teacher and dataset, each trained by the distill recipe and scored on a
    task with the teacher: task retention and decode speed against parameters — how small can the student be for
    this task."""

    kind: ClassVar[str] = "distill_sweep"
    # on the bundled task (30-layer teacher) 2 layers kept 92 % of the task, 3 95.5 %, 10 97.7 % (README):
    # the default starts small and ends at the distill job's own size
    sizes: list[int] = Field(default_factory=lambda: [3, 6, 10], min_length=1, max_length=8,
                             description="Teacher layers each student keeps, one student per value.")
    task: str = Field(min_length=1, max_length=80, description="The stored task every student and the teacher are "
                      "scored on (task retention = student score ÷ teacher score).")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("every size must keep at least 1 layer")
        return sorted(set(value))

    def new_model_ids(self) -> list[str]:
        return [f"{self.output_name}-{s}l" for s in self.sizes] if self.output_name else []

    def student_config(self, size: int, name: str) -> DistillConfig:
        """The distill config of the student that keeps `size` layers, registered as `name`."""
        data = self.model_dump(exclude={"sizes"})
        return DistillConfig(**{**data, "keep_layers": size, "layers": "", "student": "derived", "output_name": name})
