"""Configs of the export jobs: one ONNX Runtime GenAI export, and a sweep of candidates."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from .base import JobConfig


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
    fit: Literal["auto", "minmax", "gptq"] = Field(
        default="auto", description="affine int4: how each block's 4-bit codes are chosen. minmax = round to the "
        "block's own min/max grid (exact for Q4_1 weights such as the bundled model's); gptq = a calibrated fit "
        "(GPTQ) that keeps each layer's outputs on calibration data, for weights trained after rounding (a "
        "distilled student), where rounding erases the training; auto = gptq when the weights are off the 4-bit "
        "grid and calibration data is found, else minmax. A fine-tune kept by fine_tune_delta is not fitted.")
    calibration_path: str = Field(default="", max_length=4096, description="gptq: calibration data (chat or "
                                  "text, like training data; never the task's evaluation set). Empty: the data the "
                                  "model, or its nearest trained ancestor, was trained or distilled on.")
    calibration_examples: int = Field(default=128, ge=8, le=4096, description="gptq: examples of the calibration "
                                      "data the fit uses.")
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
    adapters: list[str] = Field(default_factory=list, max_length=16, description="LoRA adapters of this model "
                                "(registered adapters whose base it is) to export with it: the base is exported once "
                                "with adapter inputs (affine int4), each adapter becomes a small file beside it, and "
                                "chat and serve pick one as BASE:ADAPTER. Each is checked against its transformers "
                                "adapter on its held-out examples. Empty: the model alone.")
    adapter_examples: int = Field(default=32, ge=1, le=10_000, description="With adapters: held-out examples of "
                                  "each adapter's training data its export is checked on (greedy tokens and answers "
                                  "against the transformers adapter).")

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

    def new_model_ids(self) -> list[str]:
        return [self.output_id()]

    def output_id(self) -> str:
        from ..models import slugify

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


class AddAdaptersConfig(JobConfig):
    """Add LoRA adapters to an ONNX export that was made with adapters: only the new adapters are converted and
    checked (against their transformers adapters, as when the export was made); the base is not rebuilt."""

    kind: ClassVar[str] = "add_adapters"
    model_id: str = Field(description="The ONNX export (made with adapters) to add them to.")
    adapters: list[str] = Field(min_length=1, max_length=16, description="LoRA adapters of the export's base "
                                "model to add.")
    adapter_examples: int = Field(default=32, ge=1, le=10_000, description="Held-out examples of each adapter's "
                                  "training data its export is checked on.")
    min_agreement: float = Field(default=0.75, ge=0.0, le=1.0, description="The export must pick the transformers "
                                 "adapter's greedy token on at least this share of its held-out replies.")
    min_task_retention: float = Field(default=0.95, ge=0.0, le=1.0, description="Share of the transformers "
                                      "adapter's held-out answer score the export must keep.")
    threads: int = Field(default=0, ge=0, le=256, description="Threads for the check (0: library default).")


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

    def new_model_ids(self) -> list[str]:
        return [self.output_name] if self.output_name else []

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


class GgufConfig(JobConfig):
    """Write a registered Llama-family model as one GGUF file (llama.cpp, Ollama, LM Studio) with an Ollama Modelfile
    beside it, read it back with transformers' GGUF loader and compare it with its source, register it."""

    kind: ClassVar[str] = "gguf"
    model_id: str = Field(description="Registered model to write (a LoRA adapter is merged into its base first).")
    output_name: str = Field(default="", description="Name of the GGUF export (empty: <model>-gguf-<type>).")
    gguf_type: Literal["q4_1", "q8_0", "f16", "f32"] = Field(
        default="q4_1", description="Weight type: q4_1 (4-bit blocks with offsets, the bundled model's own type; the "
        "token embedding stays q8_0 as llama.cpp leaves it), q8_0 (8-bit), f16, f32. Norms are always f32.")
    system_prompt: str = Field(default="", max_length=20_000, description="The Modelfile's SYSTEM prompt (empty: "
                               "the one the chat template adds to a conversation without one, if any).")
    verify_tokens: int = Field(default=2048, ge=0, le=65_536, description="Tokens of the standard text both models "
                               "are scored on (logit difference, top-1 agreement, perplexity; 0: skip).")
    min_agreement: float = Field(default=0.75, ge=0.0, le=1.0, description="Verify: the GGUF read back must pick "
                                 "the source's first reply token on at least this share of 16 chat prompts.")
    task: str = Field(default="", max_length=80, description="A stored task the GGUF and its source are both scored "
                      "on; refused below min_task_retention of the source's score. Empty: no task check.")
    task_limit: int = Field(default=0, ge=0, le=100_000, description="Score only the task's first N examples (0: all).")
    min_task_retention: float = Field(default=0.95, ge=0.0, le=1.0, description="With a task: the share of the "
                                      "source's task score the GGUF must keep to be registered.")
    threads: int = Field(default=0, ge=0, le=256, description="Threads for verification (0: library default).")

    def new_model_ids(self) -> list[str]:
        return [self.output_id()]

    def output_id(self) -> str:
        from ..models import slugify

        return self.output_name.strip() or slugify(f"{self.model_id}-gguf-{self.gguf_type}")
