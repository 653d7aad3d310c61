"""The Engine facade: everything the UI and the CLI do goes through these methods."""
from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from . import dataset_files, model_refs
from .chat import LoadedModels, stream_reply
from .conversations import Conversations
from .checks import check_finetune, check_new_names, check_quantize, check_scorable, student_preview
from .configs import (DistillConfig, FineTuneConfig, GenerationParams, JobConfig,
                      PrepareModelConfig, QuantizeConfig)
from .errors import Busy, InvalidInput, NotFound, OfflineError
from .models import (DEFAULT_MODEL_ID, bundled_gguf_path, check_gguf, check_model_id, guess_source,
                     inspect_hf_folder, slugify)
from .paths import check_config_paths, check_local_path
from .records import ArtifactRecord, ChatChunk, ModelFormat, ModelRecord, ModelStatus
from .exports import export_summary, register_candidate
from .jobs.registry import JOB_KINDS, job_kind
from .loading import weights_of
from .run_history import RunHistory
from .runner import Runner
from .settings import Settings, hub_reachable
from .store import Store
from .tasks import BUNDLED as BUNDLED_TASKS
from .tasks import Task


class Engine(RunHistory):
    """One workspace. Safe to share between threads: the store opens a connection per thread."""

    def __init__(self, settings: Settings | None = None, recover: bool = True):
        self.settings = settings or Settings.from_env()
        self.settings.prepare()
        self.store = Store(self.settings.db_path)
        self.conversations = Conversations(self.store)  # saved chats: save, get, list, delete, export_json
        self.runner = Runner(self.settings, self.store)
        self._models = LoadedModels(self.settings.max_loaded_models)
        self._servers: dict = {}
        for task in BUNDLED_TASKS:  # the example tasks, registered on every start (their files ship with the app)
            self.store.put_task(task.name, task.model_dump_json(), bundled=True)
        if recover:
            self.runner.recover()

    # ---- models -------------------------------------------------------------------------------------------
    def list_models(self) -> list[ModelRecord]:
        return self.store.list_models()

    def get_model(self, model_id: str) -> ModelRecord:
        return self.store.get_model(model_id)

    def add_model(self, ref: str, name: str | None = None, source: str = "auto") -> ModelRecord:
        """Register a local HF folder at once, or start a `prepare_model` run for a GGUF file or a Hub id."""
        ref = (ref or "").strip()
        if not ref:
            raise InvalidInput("Give a model folder, a .gguf file or a Hugging Face Hub id (owner/name).")
        source = guess_source(ref) if source == "auto" else source
        if source not in {"local", "gguf", "hub"}:
            raise InvalidInput(f"Unknown source '{source}': use local, gguf or hub.")
        default_name = Path(ref).stem if source != "hub" else ref.split("/")[-1]
        model_id = check_model_id((name or "").strip() or slugify(default_name))
        if self.store.has_model(model_id):
            raise InvalidInput(f"A model named '{model_id}' is already registered: choose another name.")
        if source != "hub":
            ref = str(check_local_path(self.settings, ref, "Model path"))
        if source == "local":
            folder = Path(ref)
            facts = inspect_hf_folder(folder)
            return self.store.add_model(id=model_id, format=ModelFormat.HF, path=str(folder), source="local",
                                        source_ref=str(folder), status=ModelStatus.READY.value, owned=False, **facts)
        if source == "gguf":
            check_gguf(Path(ref))
        else:
            self._check_online(ref)
        return self._prepare(model_id, source, ref)

    def _check_online(self, repo_id: str) -> None:
        if self.settings.offline:
            raise OfflineError(f"'{repo_id}' is a Hub id, but SLMOps runs offline (SLMOPS_OFFLINE/HF_HUB_OFFLINE "
                               "is set). Download the model elsewhere and register its folder instead.")
        if not hub_reachable():
            raise OfflineError(f"'{repo_id}' looks like a Hub id, but huggingface.co cannot be reached from this "
                               "machine. Register a local folder or .gguf file instead, or connect and retry.")

    def _prepare(self, model_id: str, source: str, ref: str, record_source: str | None = None) -> ModelRecord:
        config = PrepareModelConfig(model_id=model_id, source=source, source_ref=ref)
        self.store.add_model(id=model_id, format=ModelFormat.HF, path=str(self.settings.models_dir / model_id),
                             source=record_source or source, source_ref=ref, status=ModelStatus.PREPARING.value,
                             owned=True)
        run_id = self._launch(config)
        self.store.update_model(model_id, run_id=run_id)
        return self.store.get_model(model_id)

    def ensure_default_model(self) -> ModelRecord:
        """Register the bundled SmolLM2 (converted once from its GGUF); later calls reuse what is there."""
        if self.store.has_model(DEFAULT_MODEL_ID):
            model = self.store.get_model(DEFAULT_MODEL_ID)
            if model.status != ModelStatus.FAILED.value:
                return model
            with contextlib.suppress(NotFound):  # another process may have removed it first
                self.store.delete_model(DEFAULT_MODEL_ID)  # an earlier conversion failed or was interrupted: redo it
        return self._prepare(DEFAULT_MODEL_ID, "gguf", str(bundled_gguf_path()), record_source="bundled")

    def delete_model(self, model_id: str) -> None:
        """Delete the record, and the files when the workspace owns them (a registered local folder stays)."""
        model = self.store.get_model(model_id)
        active = [r.id for r in self.store.active_runs() if r.model_id == model_id]
        if active:
            raise Busy(f"Model '{model_id}' is used by active run(s) {active}: cancel them first.")
        adapters = [m.id for m in self.store.list_models()
                    if m.parent_id == model_id and m.format == ModelFormat.ADAPTER]
        if adapters:
            raise Busy(f"Adapters {', '.join(adapters)} load on top of '{model_id}': delete them first.")
        self._models.drop(model_id)
        self.store.delete_model(model_id)
        if model.owned and Path(model.path).resolve().is_relative_to(self.settings.models_dir):
            shutil.rmtree(model.path, ignore_errors=True)

    def ready_model(self, model_id: str) -> ModelRecord:
        model = self.store.get_model(model_id)
        if model.status == ModelStatus.PREPARING.value:
            raise Busy(f"Model '{model_id}' is still being prepared (run {model.run_id}); try again when it is ready.")
        if model.status != ModelStatus.READY.value:
            raise InvalidInput(f"Model '{model_id}' failed to prepare: {model.error}. Delete it and register again.")
        return model

    def resolve(self, ref: str) -> tuple[ModelRecord, str | None]:
        """A chat or serve model (an id, or EXPORT:ADAPTER) → (ready model, adapter or None): engine/model_refs.py."""
        return model_refs.resolve(self, ref)

    def adapters_of(self, model: str | ModelRecord) -> list[str]:
        """The adapters an ONNX export was made with (addressed as `MODEL:ADAPTER`); [] for any other model."""
        return model_refs.adapters_in(self.get_model(model) if isinstance(model, str) else model)

    def serve_refs(self, model_ids: list[str], adapters: list[str] = ()) -> list[str]:
        """What a server of `model_ids` with `adapters` answers to (each checked): engine/model_refs.py."""
        return model_refs.serve_refs(self, model_ids, adapters)

    # ---- chat ---------------------------------------------------------------------------------------------
    def chat(self, model_id: str, messages: list[dict], params: GenerationParams | None = None,
             stop: threading.Event | None = None, batch: int = 0) -> Iterator[ChatChunk]:
        """Stream a reply to `messages` (the whole conversation) from a registered model. `batch` (the server
        sets it): an ONNX export's replies from now on decode together, at most `batch` at once
        (engine/batch_decode.py)."""
        params = params or GenerationParams()
        if not messages or messages[-1].get("role") != "user" or not str(messages[-1].get("content", "")).strip():
            raise InvalidInput("Type a message first: the conversation must end with a non-empty user message.")
        model, adapter = self.resolve(model_id)
        base_path, adapter_path = self.weights_of(model)
        lm, tokenizer = self._models.get(model.id, base_path, adapter_path, model.format)
        if model.format == ModelFormat.ONNX:
            if batch:
                lm.batch(batch)
            return lm.with_adapter(adapter).stream_reply(messages, params, stop)
        return stream_reply(lm, tokenizer, messages, params, stop)

    def weights_of(self, model: ModelRecord) -> tuple[str, str | None]:
        """(base folder, adapter folder or None): an adapter model loads on top of its parent's weights."""
        return weights_of(self.store, model)

    # ---- serving ------------------------------------------------------------------------------------------
    def start_server(self, model_ids: list[str], host: str = "127.0.0.1", port: int = 8000,
                     api_key: str | None = None, record_prompts: bool = False, **limits):
        """Serve models on an OpenAI-compatible API from this process; returns the running server. Every request
        is recorded (`served_requests`); its prompt text only with `record_prompts`. `limits`: max_concurrency
        (generations at once) and max_queue (requests waiting; more get 429), as `engine serve` takes them."""
        from .serve import BackgroundServer

        if not model_ids:
            raise InvalidInput("Pick at least one model to serve.")
        if port in self._servers:
            raise InvalidInput(f"Port {port} already serves {', '.join(self._servers[port].model_ids)}: stop it "
                               "first or choose another port.")
        server = BackgroundServer(self, model_ids, host, port, api_key, record_prompts, **limits).start()
        self._servers[port] = server
        return server

    def stop_server(self, port: int) -> None:
        server = self._servers.pop(int(port), None)
        if server is None:
            raise InvalidInput(f"Nothing is served on port {port} from here.")
        server.stop()

    def servers(self) -> list:
        return list(self._servers.values())

    def served_requests(self, model: str | None = None, since: str | None = None, limit: int = 10_000) -> list[dict]:
        """Requests answered by `engine serve` here (any server of this workspace), newest first."""
        from .serve_monitor import request_rows

        return request_rows(self.store, model, since, limit)

    def loaded_models(self) -> list[str]:
        return self._models.loaded()

    # ---- tasks ----------------------------------------------------------------------------------------------
    def list_tasks(self) -> list[Task]:
        return [Task.model_validate_json(row["config_json"]) for row in self.store.task_rows()]

    def get_task(self, name: str) -> Task:
        return Task.model_validate_json(self.store.task_json(name))

    def add_task(self, task: Task, replace: bool = False) -> int:
        """Store a task after checking that it can be scored; returns its number of examples."""
        check_local_path(self.settings, task.eval_path, "Evaluation set")
        if not replace and task.name in {t.name for t in self.list_tasks()}:
            raise InvalidInput(f"A task named '{task.name}' exists already: choose another name.")
        count = check_scorable(self, task)
        self.store.put_task(task.name, task.model_dump_json())
        return count

    def run_predictions(self, run_id: int) -> list[dict]:
        """Every example an evaluate run scored: n, prompt, reference, prediction, score ([] when it wrote none)."""
        import json

        files = [a.path for a in self.store.artifacts(run_id) if a.kind == "predictions" and Path(a.path).is_file()]
        if not files:
            return []
        with open(files[0], encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def compare_predictions(self, run_a: int, run_b: int) -> list[dict]:
        """The examples two evaluate runs scored, side by side, with what changed from a to b (engine.tasks.compare).
        InvalidInput when they scored different tasks."""
        from .tasks import compare

        tasks = [self.store.get_run(r).summary.get("task") for r in (run_a, run_b)]
        if tasks[0] != tasks[1]:
            raise InvalidInput(f"Run {run_a} scored task '{tasks[0]}' and run {run_b} task '{tasks[1]}': compare two "
                               "runs of the same task.")
        return compare(self.run_predictions(run_a), self.run_predictions(run_b))

    # ---- runs ---------------------------------------------------------------------------------------------
    def start_run(self, config: JobConfig, parent_run_id: int | None = None) -> int:
        """Validate what can be validated up front, then hand the run to a worker process (a study's trial names
        its study's run as parent)."""
        job_kind(config.kind)  # an unknown kind is refused before anything else
        model_id = config.model_ref()
        if model_id is not None and config.kind != PrepareModelConfig.kind:
            self.ready_model(model_id)
        self.check(config)
        return self._launch(config, parent_run_id)

    def _launch(self, config: JobConfig, parent_run_id: int | None = None) -> int:
        kind = job_kind(config.kind)
        return self.runner.start(config, kind.target, kind.exclusive, parent_run_id)

    def check(self, config: JobConfig) -> None:
        """The up-front checks of a job kind (raise InvalidInput with the reason when it cannot work)."""
        check_config_paths(self.settings, config)
        active = {r.id: job_kind(r.kind).config.model_validate_json(r.config_json)
                  for r in self.store.active_runs() if r.kind in JOB_KINDS}
        check_new_names(self, config, active)
        kind = job_kind(config.kind)
        if kind.check is not None:
            kind.check(self, config)

    def export_summary(self, model_id: str) -> dict:
        """Verified numbers of an ONNX export (variant, size, perplexity ratio, decode tok/s); {} if unknown."""
        return export_summary(self.store, self.store.get_model(model_id))

    def lineage(self, model_id: str) -> dict:
        """The family tree around a model, base → fine-tunes/students → exports, with key numbers."""
        from .lineage import lineage_tree

        return lineage_tree(self.store, model_id)

    def register_candidate(self, run_id: int, variant: str, name: str | None = None) -> ModelRecord:
        """Register a candidate a sweep built but did not choose (it stays in the run folder until then)."""
        return register_candidate(self.store, self.settings, run_id, variant, name)

    def check_quantize(self, config: QuantizeConfig) -> dict:
        """Architecture, widths and disk needed of an export; InvalidInput when it cannot work."""
        return check_quantize(self, config)

    def student_preview(self, config: DistillConfig) -> dict:
        """Parameter count and size of the student a distill config would train, before anything loads."""
        return student_preview(self, config)

    def dataset_rows(self, path: str, limit: int = 5000) -> list[dict]:
        """(prompt, response) pairs of a workspace dataset, for browsing and editing."""
        return dataset_files.read_rows(dataset_files.own_dataset(self.settings.home, path), limit)

    def save_dataset_rows(self, path: str, rows: list[dict]) -> int:
        """Replace a workspace dataset with edited (prompt, response) pairs; rows with an empty side are dropped."""
        return dataset_files.write_rows(dataset_files.own_dataset(self.settings.home, path), rows)

    def list_datasets(self) -> list[ArtifactRecord]:
        """Datasets made by runs (distillation stage 1), newest first, whose files still exist."""
        return [a for a in self.store.artifacts_of_kind("dataset") if Path(a.path).exists()]

    def check_finetune(self, config: FineTuneConfig) -> dict:
        """The dataset reports and the memory estimate of a fine-tune; InvalidInput when it cannot work."""
        return check_finetune(self, config)

    def validate_dataset(self, model_id: str, path: str, max_length: int, columns: dict | None = None):
        """The dataset report (problems, lengths, preview) as `model_id`'s tokenizer sees the data."""
        from .data_check import validate_dataset
        from .loading import load_tokenizer

        tokenizer = load_tokenizer(self.ready_model(model_id).path)
        return validate_dataset(str(check_local_path(self.settings, path, "Dataset path")), tokenizer, max_length,
                                columns or None)

    def qlora_unavailable_reason(self) -> str | None:
        """Why QLoRA cannot run on this machine (it needs a CUDA GPU and bitsandbytes), or None when it can."""
        from .training import qlora_unavailable_reason

        return qlora_unavailable_reason()

    def probe_finetune_step(self, config: FineTuneConfig) -> float:
        """Seconds per optimizer step, measured with 2 real steps on a batch of the data (in this process)."""
        from .training import probe_step_seconds

        check_config_paths(self.settings, config)
        return probe_step_seconds(config, self.ready_model(config.model_id).path)

    def resume_run(self, run_id: int, extra_epochs: float | None = None) -> int:
        """Start a new run that continues `run_id` (engine/resume.py says how, per kind)."""
        from .resume import resume_config

        return self.start_run(resume_config(self.settings, self.store.get_run(run_id), extra_epochs))

    def study(self, run_id: int):
        """The Optuna study of a tune run (for its trials table and Optuna's plots)."""
        from .tuning import study_of_run

        return study_of_run(self.settings, self.store.get_run(run_id))

    def study_trials(self, run_id: int) -> list[dict]:
        """The study's trials: number, state, objective value, training steps, run, params."""
        from .tuning import trial_rows

        return trial_rows(self.study(run_id))

    def best_trial_config(self, run_id: int) -> JobConfig:
        """The base job's config with the best trial's values (to run it again, or to clone into a form)."""
        from .tuning import best_config

        return best_config(self.study(run_id))

    def close(self) -> None:
        for server in list(self._servers.values()):
            server.stop()
        self._servers.clear()
        self._models.clear()  # ends batch threads (engine/batch_decode.py)
        self.runner.shutdown()
        self.store.close()

