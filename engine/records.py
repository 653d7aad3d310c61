"""Plain records the engine returns: frozen dataclasses built from store rows."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class ModelFormat(StrEnum):
    """What a registered model's folder holds (one of these, never a bare string)."""
    HF = "hf"  # a transformers safetensors folder (full weights)
    ADAPTER = "hf-adapter"  # a PEFT LoRA adapter; its base is the model's parent
    ONNX = "onnx-genai"  # an ONNX Runtime GenAI export
    GGUF = "gguf"  # a GGUF export (model.gguf + an Ollama Modelfile) for llama.cpp, Ollama, LM Studio


EXPORT_FORMATS = frozenset({ModelFormat.ONNX, ModelFormat.GGUF})  # made for a runtime: not exported again


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"  # a study's trial stopped early by its pruner: a verdict on its settings, not a failure

    @property
    def final(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


ACTIVE_STATUSES = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


class ModelStatus(str, Enum):
    PREPARING = "preparing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelRecord:
    id: str
    format: ModelFormat
    path: str
    source: str  # bundled | local | gguf | hub | run
    source_ref: str
    status: str
    params: int | None
    size_bytes: int | None
    architecture: str | None
    parent_id: str | None
    run_id: int | None
    created_at: str
    owned: bool  # True when the files live in the workspace and are deleted with the record
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> "ModelRecord":
        values = {k: row.get(k) for k in cls.__dataclass_fields__ if k not in ("owned", "format")}
        return cls(**values, format=ModelFormat(row["format"]), owned=bool(row.get("owned")))

    @property
    def ready(self) -> bool:
        return self.status == ModelStatus.READY.value


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    status: RunStatus
    model_id: str | None
    config_json: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: float
    stage: str
    eta_s: float | None
    error: str | None
    pid: int | None
    cancel_requested: bool
    summary: dict = field(default_factory=dict)
    queue_position: int | None = None  # waiting for a job slot: 1 = next to start (set by Store.get_run)
    parent_run_id: int | None = None  # the study (tune run) this run is a trial of

    @classmethod
    def from_row(cls, row: dict) -> "RunRecord":
        return cls(
            id=row["id"], kind=row["kind"], status=RunStatus(row["status"]), model_id=row.get("model_id"),
            config_json=row["config_json"], created_at=row["created_at"], started_at=row.get("started_at"),
            finished_at=row.get("finished_at"), progress=row.get("progress") or 0.0, stage=row.get("stage") or "",
            eta_s=row.get("eta_s"), error=row.get("error"), pid=row.get("pid"),
            cancel_requested=bool(row.get("cancel_requested")), summary=json.loads(row.get("summary_json") or "{}"),
            parent_run_id=row.get("parent_run_id"),
        )

    @property
    def config(self) -> dict:
        return json.loads(self.config_json)


@dataclass(frozen=True)
class MetricPoint:
    run_id: int
    step: int
    name: str
    value: float
    time: str


@dataclass(frozen=True)
class LogLine:
    run_id: int
    time: str
    level: str
    message: str


@dataclass(frozen=True)
class ArtifactRecord:
    id: int
    run_id: int
    kind: str
    path: str
    size_bytes: int
    model_id: str | None
    created_at: str


@dataclass(frozen=True)
class ChatChunk:
    """The reply so far; `done` on the last chunk, which carries the final speed figures."""

    text: str
    new_tokens: int
    seconds_to_first_token: float | None
    tokens_per_s: float | None  # decode speed: tokens after the first, over the time after the first
    done: bool = False
    prompt_tokens: int | None = None
