"""Typed job configs: one pydantic model per job kind. They give the CLI, the form widgets and the stored record.
Split by family (base, training, export, the small jobs); import them from here."""
from .base import HELDOUT_PROMPTS, PROMPTS_DIR, SEED_PROMPTS, GenerationParams, JobConfig
from .export import AddAdaptersConfig, GgufConfig, QuantizeConfig, QuantizeSweepConfig, sweep_variants
from .jobs import (DEFAULT_SELFTEST_PROMPTS, GEN_LENGTHS, PROMPT_LENGTHS, BenchmarkConfig, EvaluateConfig,
                   PrepareModelConfig, SelfTestConfig)
from .training import (AdapterSetConfig, AdapterSpec, DistillConfig, DistillSweepConfig, FineTuneConfig,
                       GenerateDataConfig, TrainingConfig)
from .tune import SearchRange, TuneConfig

__all__ = ["JobConfig", "GenerationParams", "PROMPTS_DIR", "SEED_PROMPTS", "HELDOUT_PROMPTS", "QuantizeConfig",
           "QuantizeSweepConfig", "AddAdaptersConfig", "GgufConfig", "sweep_variants", "DEFAULT_SELFTEST_PROMPTS",
           "GEN_LENGTHS",
           "PROMPT_LENGTHS", "BenchmarkConfig", "EvaluateConfig", "PrepareModelConfig", "SelfTestConfig",
           "DistillConfig", "DistillSweepConfig", "FineTuneConfig", "GenerateDataConfig", "TrainingConfig",
           "SearchRange", "TuneConfig", "AdapterSetConfig", "AdapterSpec"]
