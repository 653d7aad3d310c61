"""SLMOps Studio engine: models, runs, chat. No UI imports here (gradio/plotly belong to slmops_ui)."""
from .api import Engine
from .configs import (AdapterSetConfig, AddAdaptersConfig, BenchmarkConfig, DistillConfig, EvaluateConfig,
                      FineTuneConfig, GenerateDataConfig, GenerationParams, GgufConfig, JobConfig, PrepareModelConfig,
                      QuantizeConfig, QuantizeSweepConfig, SearchRange, SelfTestConfig, TuneConfig, sweep_variants)
from .configs.tune import DEFAULT_TUNE_SPACES, TUNE_OBJECTIVES
from .errors import (Busy, InvalidInput, NotFound, OfflineError, SlmopsError, UnsupportedModel,
                     VerificationFailed)
from .jobs.registry import JOB_KINDS, JobKind
from .models import DEFAULT_MODEL_ID
from .records import (EXPORT_FORMATS, ArtifactRecord, ChatChunk, LogLine, MetricPoint, ModelFormat, ModelRecord,
                      ModelStatus, RunRecord, RunStatus)
from .settings import Settings
from .stats import within_noise
from .tasks import Task

__all__ = [
    "Engine", "Settings", "DEFAULT_MODEL_ID", "BenchmarkConfig", "AddAdaptersConfig", "AdapterSetConfig",
    "JobConfig", "EvaluateConfig", "PrepareModelConfig", "SelfTestConfig", "FineTuneConfig",
    "GenerateDataConfig", "DistillConfig", "QuantizeConfig", "QuantizeSweepConfig", "GgufConfig", "GenerationParams",
    "TuneConfig", "SearchRange", "TUNE_OBJECTIVES", "DEFAULT_TUNE_SPACES",
    "JOB_KINDS", "JobKind", "sweep_variants",
    "ChatChunk", "EXPORT_FORMATS", "ModelFormat", "ModelRecord", "ModelStatus", "RunRecord", "RunStatus", "MetricPoint",
    "LogLine",
    "ArtifactRecord", "Task", "within_noise",
    "SlmopsError", "InvalidInput", "NotFound", "UnsupportedModel", "OfflineError", "Busy",
    "VerificationFailed",
]
