"""The dashboard's public API: the actions a user scripts with `gradio_client` (see README), one stable name each.
`build_app` marks every other event of the UI undocumented, so `view_api()` lists exactly these."""
from __future__ import annotations

import dataclasses

import gradio as gr

from engine import JOB_KINDS, GenerationParams, JobKind

from .forms import api_errors


def as_dict(record) -> dict:
    """A record as plain JSON-able data (enums by value). A model's `path` is given as `folder`: gradio_client takes
    any object with a `path` key for a file to download."""
    data = dataclasses.asdict(record)
    return {("folder" if k == "path" else k): getattr(v, "value", v) for k, v in data.items()}


def start_endpoint(engine, kind: JobKind):
    def start(config_json: str) -> int:
        return engine.start_run(kind.config.model_validate_json(config_json or "{}"))

    fields = ", ".join(kind.config.model_fields)
    start.__doc__ = (f"Start a {kind.name} run from its config as a JSON object ({kind.config.__name__}: {fields}); "
                     "returns the run id. Follow it with get_run.")
    start.__name__ = f"start_{kind.name}"
    return start


def register_api(engine) -> list[str]:
    """Declare the public endpoints inside the Blocks being built; returns their names."""

    def list_models() -> list[dict]:
        """Every registered model: id, format, folder, status, parameters, size, parent and the run that made it."""
        return [as_dict(m) for m in engine.list_models()]

    def register_model(ref: str, name: str = "") -> dict:
        """Register a local Hugging Face folder, a .gguf file or (online) a Hub id; returns the model record (a
        GGUF or Hub model is prepared by a run: its run_id, status 'preparing')."""
        return as_dict(engine.add_model(ref, name=name or None))

    def list_runs(limit: int = 50, kind: str = "", status: str = "") -> list[dict]:
        """Recent runs, newest first, optionally of one kind and/or status."""
        return [as_dict(r) for r in engine.list_runs(limit=limit, kind=kind or None, status=status or None)]

    def get_run(run_id: int) -> dict:
        """One run: status, progress, stage, error, summary (its results) and config."""
        return as_dict(engine.get_run(int(run_id)))

    def cancel_run(run_id: int) -> dict:
        """Ask a queued or running run to stop; returns the run as it is now."""
        return as_dict(engine.cancel_run(int(run_id)))

    def chat(model: str, message: str, system_prompt: str = "", temperature: float = 0.0,
             max_new_tokens: int = 256) -> str:
        """One chat turn with a registered model; returns the whole reply (temperature 0 = greedy)."""
        params = GenerationParams(system_prompt=system_prompt, temperature=temperature, max_new_tokens=max_new_tokens)
        chunks = list(engine.chat(model, [{"role": "user", "content": message}], params))
        return chunks[-1].text if chunks else ""

    endpoints = [list_models, register_model, list_runs, get_run, cancel_run, chat]
    endpoints += [start_endpoint(engine, kind) for kind in JOB_KINDS.values()]
    for fn in endpoints:
        gr.api(api_errors(fn), api_name=fn.__name__)
    return [fn.__name__ for fn in endpoints]
