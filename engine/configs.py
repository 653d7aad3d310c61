"""Typed job configs: one pydantic model per job kind. They give the CLI, the form widgets and the stored record."""
from __future__ import annotations

from typing import ClassVar, Literal

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator


class JobConfig(BaseModel):
    """Base of every job config: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: ClassVar[str]  # the job kind's name; engine/jobs/registry.py declares the rest of the kind

    def model_ref(self) -> str | None:
        """The registered model this run is about (shown in the run history)."""
        return getattr(self, "model_id", None)


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


class GenerationParams(BaseModel):
    """Sampling settings for chat. temperature 0 means greedy decoding."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str = Field(default="", max_length=20_000, description="Optional system message.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 = greedy; higher = more random.")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, description="Nucleus sampling: keep this share of mass.")
    max_new_tokens: int = Field(default=256, ge=1, le=4096, description="Longest reply, in tokens.")


class TrainingConfig(JobConfig):
    """The fields every Trainer-based job shares (data, schedule, checkpoints); jobs override defaults."""

    train_path: str = Field(min_length=1, description="Training data: .jsonl, .json, .csv or .parquet.")
    eval_path: str | None = Field(default=None, description="Separate eval file; empty: split off eval_ratio.")
    eval_ratio: float = Field(default=0.15, gt=0.0, le=0.5, description="Share of the train file held out for "
                              "eval when there is no eval file.")
    columns: dict[str, str] = Field(default_factory=dict, description="Column mapping when names differ, e.g. "
                                    "{'prompt': 'question', 'completion': 'answer'}.")
    # Fine-tuning defaults, measured on the bundled SmolLM2 + example dataset (2 cores): 2 epochs at 1e-3 take the
    # held-out JSON match from 0/100 to 88/100 with LoRA r 8 on q/v in about 7.5 minutes.
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

    @field_validator("train_path", "eval_path")
    @classmethod
    def _absolute(cls, value: str | None, info) -> str | None:
        """Relative paths are taken from where the config is made, so the worker (another cwd) finds them."""
        value = (value or "").strip() or None
        if value is None and info.field_name == "train_path":
            raise ValueError("give the path of a training file (.jsonl, .json, .csv or .parquet)")
        return os.path.abspath(os.path.expanduser(value)) if value else value


class FineTuneConfig(TrainingConfig):
    """Fine-tune a registered model on a dataset with LoRA or full fine-tuning (HF Trainer + peft)."""

    kind: ClassVar[str] = "finetune"
    model_id: str = Field(description="Registered base model (safetensors folder) to fine-tune.")
    method: Literal["lora", "full", "qlora"] = Field(default="lora", description="lora: train small adapters; "
                                                     "full: all weights; qlora: 4-bit base (CUDA + bitsandbytes).")
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
    merge: bool = Field(default=False, description="Also save a merged model (LoRA folded into the weights).")


PROMPTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "prompts")
SEED_PROMPTS = os.path.join(PROMPTS_DIR, "seed_prompts.jsonl")


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
    # distillation's own defaults: a fresh (layer-dropped) student needs more steps at a lower rate than LoRA.
    # Measured (benchmarks/distill_recipe.py, request_to_json, teacher 0.880): 10 of 30 layers by importance,
    # 2 epochs → 0.320 (36 % of the teacher), 6 epochs → 0.830 (94 %).
    epochs: float = Field(default=6.0, gt=0.0, le=100.0, description="Passes over the training data.")
    learning_rate: float = Field(default=5e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5, description="Share of steps spent warming up.")
    batch_size: int = Field(default=8, ge=1, le=512, description="Examples per step per process.")
    max_length: int = Field(default=160, ge=8, le=32768, description="Tokens per example (longer ones are cut).")
    eval_steps: int = Field(default=50, ge=1, le=1_000_000, description="Evaluate every N optimizer steps.")
    save_steps: int = Field(default=50, ge=1, le=1_000_000, description="Checkpoint every N optimizer steps.")
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
    sizes: list[int] = Field(default_factory=lambda: [6, 10, 14], min_length=1, max_length=8,
                             description="Teacher layers each student keeps, one student per value.")
    task: str = Field(min_length=1, max_length=80, description="The stored task every student and the teacher are "
                      "scored on (task retention = student score ÷ teacher score).")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("every size must keep at least 1 layer")
        return sorted(set(value))

    def student_config(self, size: int, name: str) -> DistillConfig:
        """The distill config of the student that keeps `size` layers, registered as `name`."""
        data = self.model_dump(exclude={"sizes"})
        return DistillConfig(**{**data, "keep_layers": size, "layers": "", "student": "derived", "output_name": name})


class QuantizeConfig(JobConfig):
    """Convert a registered model to ONNX Runtime GenAI (fp32/int8/int4), verify it against its source, register it.

    Default (measured on the bundled SmolLM2, see README): int4 "affine" on the fused kernels keeps the Q4_1 source's
    quality (perplexity ×1.000 of fp32; ×1.004 on the portable graph) where the builder's own int4 loses ×1.39.
    """

    kind: ClassVar[str] = "quantize"
    model_id: str = Field(description="Registered model to convert (a LoRA adapter is merged into its base first).")
    output_name: str = Field(default="", description="Name of the exported model (empty: <model>-onnx-<variant>).")
    precision: Literal["int4", "int8", "fp32"] = Field(default="int4", description="Weight precision.")
    method: Literal["affine", "builder", "olive"] = Field(
        default="affine", description="int4 only. affine: 4-bit blocks with float offsets (exact for Q4_1 "
        "weights), 8-bit embeddings/head; builder: the ONNX Runtime GenAI builder's own int4; olive: an Olive "
        "ONNX quantization pass on the builder's fp32 export.")
    kernel: Literal["fused", "portable"] = Field(
        default="fused", description="affine int4 at block 32 and accuracy level 4: fused = one native Q4_1 kernel "
        "per weight matrix (x86-64 with AVX2 and FMA; compiled here with g++ and shipped inside the export; the "
        "job falls back to portable where it cannot be built); portable = ONNX Runtime's own ops only "
        "(MatMulNBits plus an offset MatMul), runs wherever ONNX Runtime does.")
    olive_pass: Literal["rtn", "kquant"] = Field(default="rtn", description="olive int4: block-wise RTN "
                                                 "(OnnxBlockWiseRtnQuantization) or k-quant (OnnxKQuantQuantization).")
    block_size: int = Field(default=32, ge=16, le=256, description="int4 block size (must divide the model's "
                            "widths).")
    symmetric: bool = Field(default=True, description="builder int4: symmetric (no zero points).")
    higher_precision: Literal["none", "last_matmul", "mixed_layers"] = Field(
        default="none", description="builder int4: keep the LM head (last_matmul) or the head plus a share of "
        "layers (mixed_layers) at int8.")
    accuracy_level: Literal[1, 2, 3, 4] = Field(default=4, description="MatMulNBits compute type: 4 = int8 "
                                                "activations (fast on CPU), 1 = fp32 (slow on CPU).")
    fine_tune_delta: Literal["auto", "off"] = Field(
        default="auto", description="affine int4 of a fine-tune: auto = when the model was fine-tuned from a "
        "registered model of the same shape, quantize that model's weights and keep the fine-tune's change beside "
        "them (a LoRA change exactly, in fp32; a full-rank one as 8-bit blocks); off = quantize the merged weights "
        "as they are (4-bit rounding erases most of a small fine-tune's change).")
    execution_provider: Literal["cpu", "cuda"] = Field(default="cpu", description="Where the export will run.")
    task: str = Field(default="", max_length=80, description="A stored task the export and its source are both "
                      "scored on; the export is refused when it keeps less than min_task_retention of the source's "
                      "score (it lost the fine-tune). With a task, first-token agreement on the general check "
                      "prompts is reported but not required (a task-only model babbles on them). Empty: no task "
                      "check.")
    task_limit: int = Field(default=0, ge=0, le=100_000, description="Score only the task's first N examples "
                            "(0: all).")
    min_task_retention: float = Field(default=0.95, ge=0.0, le=1.0, description="With a task: the share of the "
                                      "source's task score the export must keep to be registered.")
    verify_tokens: int = Field(default=4096, ge=0, le=65_536, description="Tokens of the standard text for the "
                               "perplexity check (0: skip perplexity).")
    min_agreement: float = Field(default=0.75, ge=0.0, le=1.0, description="Verify: the export must pick the "
                                 "source's first reply token on at least this share of 16 chat prompts, else it is "
                                 "not registered and the run fails (0: register whatever it scores).")
    threads: int = Field(default=0, ge=0, le=256, description="Threads for verification (0: library default).")

    def variant(self) -> str:
        if self.precision != "int4":
            return self.precision
        name = {"affine": "int4", "builder": f"int4-builder-b{self.block_size}",
                "olive": f"int4-olive-{self.olive_pass}-b{self.block_size}"}[self.method]
        if self.method == "affine" and self.block_size != 32:
            name += f"-b{self.block_size}"
        if self.method == "affine" and self.kernel == "portable":
            name += "-portable"
        if self.method in ("builder", "olive") and not self.symmetric and self.olive_pass == "rtn":
            name += "-asym"
        if self.method == "builder" and self.higher_precision != "none":
            name += "-" + self.higher_precision.replace("_", "")
        return name

    def output_id(self) -> str:
        from .models import slugify

        return self.output_name.strip() or slugify(f"{self.model_id}-onnx-{self.variant()}")


# Candidate variants of a sweep: QuantizeConfig settings, named by QuantizeConfig.variant().
SWEEP_PRESETS: list[dict] = [
    {},  # int4 affine, block 32 (fused kernel)
    {"kernel": "portable"},
    {"block_size": 64},
    {"method": "builder"},
    {"method": "builder", "block_size": 64},
    {"method": "builder", "symmetric": False, "higher_precision": "last_matmul"},
    {"method": "builder", "higher_precision": "mixed_layers"},
    {"method": "olive"},
    {"method": "olive", "olive_pass": "kquant"},
    {"precision": "int8"},
    {"precision": "fp32"},
]


def sweep_variants() -> dict[str, dict]:
    return {QuantizeConfig(model_id="x", **p).variant(): p for p in SWEEP_PRESETS}


class QuantizeSweepConfig(JobConfig):
    """Build several candidate exports, verify each (size, decode speed, perplexity ratio), register the fastest
    one within the quality bound; the others stay in the run folder and can be registered from the UI."""

    kind: ClassVar[str] = "quantize_sweep"
    model_id: str = Field(description="Registered model to convert.")
    candidates: list[str] = Field(default_factory=lambda: ["int4", "int4-b64", "int4-builder-b32",
                                                           "int4-builder-b64", "int8"],
                                  min_length=1, description="Variants to build (see SWEEP_PRESETS).")
    max_ppl_ratio: float = Field(default=1.05, ge=1.0, le=10.0, description="Quality bound: perplexity of the "
                                 "export ÷ source perplexity.")
    min_agreement: float = Field(default=0.75, ge=0.0, le=1.0, description="Quality bound: share of 16 chat "
                                 "prompts on which the export picks the source's first reply token.")
    output_name: str = Field(default="", description="Name of the chosen export (empty: <model>-onnx-<variant>).")
    verify_tokens: int = Field(default=2048, ge=128, le=65_536, description="Tokens of the standard text scored.")
    threads: int = Field(default=0, ge=0, le=256, description="Threads for verification (0: library default).")

    @field_validator("candidates")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = sweep_variants()
        bad = [v for v in value if v not in known]
        if bad:
            raise ValueError(f"unknown candidate(s) {bad}; choose from {list(known)}")
        return list(dict.fromkeys(value))

    def candidate_configs(self) -> list[QuantizeConfig]:
        known = sweep_variants()
        return [QuantizeConfig(model_id=self.model_id, verify_tokens=self.verify_tokens, threads=self.threads,
                               **known[v]) for v in self.candidates]


HELDOUT_PROMPTS = os.path.join(PROMPTS_DIR, "seed_prompts.heldout.jsonl")
PROMPT_LENGTHS = {"short": 0, "medium": 256, "long": 1024}  # tokens of a passage put before each prompt
GEN_LENGTHS = {"short": 32, "medium": 64, "long": 256}


class BenchmarkConfig(JobConfig):
    """Speed, memory and quality of several models, each measured in a fresh process, scored the same way."""

    kind: ClassVar[str] = "benchmark"
    model_ids: list[str] = Field(min_length=1, max_length=32, description="Registered models of any format.")
    prompts_path: str = Field(default=HELDOUT_PROMPTS, description="Prompt set: JSONL with a 'prompt' field "
                              "(or any dataset whose user prompts are reused).")
    prompt_count: int = Field(default=2, ge=1, le=100, description="Prompts timed per repetition.")
    prompt_length: Literal["short", "medium", "long"] = Field(
        default="short", description="short: the prompt alone; medium/long: after a ~256/~1024-token passage.")
    gen_length: Literal["short", "medium", "long"] = Field(default="medium", description="Tokens generated per "
                                                           "call: 32 / 64 / 256 (EOS ignored).")
    repetitions: int = Field(default=5, ge=1, le=100, description="Timed repetitions of the prompt set.")
    warmup: int = Field(default=1, ge=0, le=10, description="Untimed calls first (the prompts in turn).")
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
