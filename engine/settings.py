"""Where the engine keeps its state, and the environment every process of it runs with."""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """One workspace: the SQLite store, models, run folders and every cache live under `home`."""

    home: Path = field(default_factory=lambda: PROJECT_ROOT / "workspace")
    offline: bool = False  # True: never touch the network (Hub ids are refused at once)
    max_loaded_models: int = 2  # chat keeps this many models in memory per process (2: side-by-side)
    cancel_grace_s: float = 2.0  # after a cancel request a worker gets this long to stop by itself
    max_parallel_jobs: int = 1  # exclusive jobs (training, export, benchmark) running at once; more wait in a queue
    restrict_paths: bool = False  # shared / non-local app: typed paths only under the workspace and allowed_roots
    allowed_roots: tuple[Path, ...] = ()  # folders the operator allowed besides the workspace (--allow-path)

    def __post_init__(self):
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        object.__setattr__(self, "allowed_roots", tuple(Path(p).expanduser().resolve() for p in self.allowed_roots))

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        home = Path(os.environ.get("SLMOPS_HOME") or PROJECT_ROOT / "workspace")
        offline = _truthy(os.environ.get("SLMOPS_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE"))
        values = {"home": home.expanduser().resolve(), "offline": offline}
        roots = [p for p in os.environ.get("SLMOPS_ALLOWED_PATHS", "").split(os.pathsep) if p.strip()]
        if roots:
            values["allowed_roots"] = tuple(roots)
        if _truthy(os.environ.get("SLMOPS_RESTRICT_PATHS")):
            values["restrict_paths"] = True
        if os.environ.get("SLMOPS_MAX_JOBS", "").strip():
            values["max_parallel_jobs"] = max(1, int(os.environ["SLMOPS_MAX_JOBS"]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def db_path(self) -> Path:
        return self.home / "slmops.db"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def cache_env(self) -> dict[str, str]:
        """Environment that keeps every library cache inside the workspace (nothing in the user's home)."""
        c = self.cache_dir
        env = {
            "HF_HOME": str(c / "huggingface"),
            "HF_DATASETS_CACHE": str(c / "datasets"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "GRADIO_TEMP_DIR": str(c / "gradio"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "MPLCONFIGDIR": str(c / "matplotlib"),
            "TORCHINDUCTOR_CACHE_DIR": str(c / "torchinductor"),
            "TOKENIZERS_PARALLELISM": "false",
            # onnxruntime / onnxruntime-genai / Olive keep a device id and usage databases under
            # $XDG_CACHE_HOME/Microsoft; Olive's telemetry is switched off
            "XDG_CACHE_HOME": str(c / "xdg"),
            "OLIVE_DISABLE_TELEMETRY": "1",
            "OLIVE_TELEMETRY_CACHE_DIR": str(c / "olive-telemetry"),
        }
        if self.offline:
            env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        return env

    def prepare(self) -> None:
        """Create the workspace folders and point every cache into them (call before importing HF libraries)."""
        for d in (self.home, self.models_dir, self.runs_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.environ.update(self.cache_env())


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick check that the Hugging Face Hub answers; never waits longer than `timeout_s` (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])
