"""Up-front checks of the job kinds (the registry, engine/jobs/registry.py, names each kind's): what can be known
before a run starts is checked here, so a bad input never becomes a failed run. Each takes (engine, config) and
raises InvalidInput with what to fix."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from .configs import (AdapterSetConfig, AddAdaptersConfig, BenchmarkConfig, DistillConfig, DistillSweepConfig,
                      EvaluateConfig, FineTuneConfig, GenerateDataConfig, GgufConfig, QuantizeConfig,
                      QuantizeSweepConfig)
from .data import load_prompts
from .errors import InvalidInput
from .models import check_model_id
from .records import ModelFormat

LAYER = re.compile(r"\.layers\.(\d+)\.")


def check_generate(engine, config: GenerateDataConfig) -> int:
    """The teacher is a ready full model and the prompts load; returns the number of prompts."""
    teacher = engine.ready_model(config.teacher_model_id)
    if teacher.format != ModelFormat.HF:
        raise InvalidInput(f"'{teacher.id}' is a {teacher.format} model; use a full model as the teacher.")
    if config.regex:
        try:
            re.compile(config.regex)
        except re.error as exc:
            raise InvalidInput(f"regex {config.regex!r} is not valid: {exc}") from None
    for shot in config.few_shot:
        if set(shot) != {"prompt", "response"}:
            raise InvalidInput("each few-shot example needs exactly the keys 'prompt' and 'response'")
    prompts = load_prompts(config.prompts_path)
    if not prompts:
        raise InvalidInput(f"{config.prompts_path} holds no usable prompts.")
    return len(prompts)


def _header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def student_preview(engine, config: DistillConfig) -> dict:
    """Parameters and size of the student before anything is loaded (from the teacher's safetensors headers)."""
    teacher = engine.ready_model(config.teacher_model_id)
    n_layers = json.loads((Path(teacher.path) / "config.json").read_text()).get("num_hidden_layers", 0)
    if config.student == "existing":
        if not config.student_model_id:
            raise InvalidInput("Pick the registered student model (or choose a derived student).")
        student = engine.ready_model(config.student_model_id)
        return {"layers": None, "params": student.params, "bytes": student.size_bytes,
                "teacher_params": teacher.params, "ratio": student.params / teacher.params}
    try:
        keep = set(config.layer_indices(n_layers))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    params = 0
    for f in Path(teacher.path).glob("*.safetensors"):
        for name, info in _header(f).items():
            if name == "__metadata__":
                continue
            m = LAYER.search(name)
            if m is None or int(m.group(1)) in keep:
                count = 1
                for d in info["shape"]:
                    count *= d
                params += count
    return {"layers": sorted(keep), "params": params, "bytes": params * 4, "teacher_params": teacher.params,
            "ratio": params / teacher.params}


def check_new_names(engine, config, active: dict) -> None:
    """The names a run will register its models under (config.new_model_ids()) are usable and free, also of the
    runs queued or running now (`active`: run id → its config): refused before anything trains."""
    claimed = {name: run_id for run_id, cfg in active.items() for name in cfg.new_model_ids()}
    for name in config.new_model_ids():
        check_model_id(name)
        if engine.store.has_model(name):
            raise InvalidInput(f"A model named '{name}' already exists: choose another output name or delete "
                               "that model first.")
        if name in claimed:
            raise InvalidInput(f"Run {claimed[name]} (queued or running) will register a model named '{name}': "
                               "choose another output name.")


def check_named_task(engine, name: str) -> None:
    """A job that names a task (empty: none): it exists and can be scored (a judge task's judge model is ready)."""
    if name:
        check_scorable(engine, engine.get_task(name))


def check_scorable(engine, task) -> int:
    """The task's examples and scorer fit, and a judge task's judge model is ready; returns the examples."""
    from .tasks import check_task

    count = check_task(task)
    if task.scorer == "judge":
        engine.weights_of(engine.ready_model(task.judge_model))
    return count


def check_distill(engine, config: DistillConfig) -> dict:
    """Teacher, student and data can work together; returns the student preview."""
    from .loading import load_tokenizer

    from .distill import check_same_tokenizer

    teacher = engine.ready_model(config.teacher_model_id)
    if teacher.format != ModelFormat.HF:
        raise InvalidInput(f"'{teacher.id}' is a {teacher.format} model; use a full model as the teacher.")
    preview = student_preview(engine, config)
    if config.student == "existing":
        student = engine.ready_model(config.student_model_id)
        if student.format != ModelFormat.HF:
            raise InvalidInput(f"'{student.id}' is a {student.format} model; the student must be a full model.")
        check_same_tokenizer(load_tokenizer(teacher.path), load_tokenizer(student.path),
                             teacher.id, student.id)
    paths = [config.train_path] + ([config.eval_path] if config.eval_path else [])
    errors = [f"{r.path}: {e}" for p in paths
              for r in [engine.validate_dataset(teacher.id, p, config.max_length, config.columns)] for e in r.errors]
    if errors:
        raise InvalidInput("The dataset has problems; fix them and validate again:\n- " + "\n- ".join(errors))
    check_named_task(engine, config.task)
    return preview


def check_distill_sweep(engine, config: DistillSweepConfig) -> dict:
    """As for one student, and every size fits in the teacher."""
    preview = check_distill(engine, config.student_config(config.sizes[0], ""))
    teacher = engine.ready_model(config.teacher_model_id)
    n_layers = json.loads((Path(teacher.path) / "config.json").read_text()).get("num_hidden_layers", 0)
    too_big = [s for s in config.sizes if s >= n_layers]
    if too_big:
        raise InvalidInput(f"Sizes {too_big}: a student keeps fewer than the teacher's {n_layers} layers.")
    return preview


def check_finetune(engine, config: FineTuneConfig) -> dict:
    """Everything that can be known before a fine-tune starts: the dataset report and the memory estimate.
    Raises InvalidInput when the run cannot work (bad data, no room in memory)."""
    import psutil

    from .training import estimate_memory_bytes, qlora_unavailable_reason

    model = engine.ready_model(config.model_id)
    if model.format != ModelFormat.HF:
        raise InvalidInput(f"'{model.id}' is a {model.format} model; fine-tune its base or a merged model.")
    if config.method == "qlora" and (reason := qlora_unavailable_reason()):
        raise InvalidInput(reason + " Use method 'lora' instead.")
    if config.backend == "olive":
        from .olive import check_olive

        check_olive(config)
    paths = [config.train_path] + ([config.eval_path] if config.eval_path else [])
    reports = [engine.validate_dataset(model.id, p, config.max_length, config.columns) for p in paths]
    errors = [f"{r.path}: {e}" for r in reports for e in r.errors]
    if errors:
        raise InvalidInput("The dataset has problems; fix them and validate again:\n- " + "\n- ".join(errors))
    memory = estimate_memory_bytes(config, model.path, model.params or 0)
    available = psutil.virtual_memory().available
    if memory["total"] > available:
        raise InvalidInput(f"This run needs about {memory['total'] / 2**30:.1f} GiB of memory but "
                           f"{available / 2**30:.1f} GiB are free. Lower batch size or max length, or use "
                           "LoRA instead of full fine-tuning.")
    return {"reports": reports, "memory": memory, "available_bytes": available}


def check_adapter_set(engine, config: AdapterSetConfig) -> dict:
    """Each adapter as its own fine-tune (data, memory) and its task scorable; returns the first one's check."""
    from .training import set_member_config

    checked = []
    for spec in config.adapters:
        check_named_task(engine, spec.task)
        try:
            checked.append(check_finetune(engine, set_member_config(engine.store, config, spec)))
        except InvalidInput as exc:
            raise InvalidInput(f"Adapter '{spec.name}': {exc}") from None
    return checked[0]


def check_quantize(engine, config: QuantizeConfig) -> dict:
    """Refuse an export that cannot work (architecture, block size, GPU, disk) before a run starts."""
    from .onnx_export import check_disk, check_export

    model = engine.ready_model(config.model_id)
    if model.format == ModelFormat.ONNX:
        raise InvalidInput(f"'{model.id}' is already an ONNX export; quantize its source model instead.")
    folder = Path(engine.weights_of(model)[0])
    facts = check_export(folder, config, model.params)
    check_disk(engine.settings.models_dir, facts["bytes_needed"])
    check_named_task(engine, config.task)
    check_calibration(engine, config, model)
    check_adapters(engine, config, model)
    return facts


def check_adapters(engine, config: QuantizeConfig, base) -> None:
    """Adapters exported with a base: LoRA adapters of that very base, on matrices the export has inputs for."""
    if not config.adapters:
        return
    if config.precision != "int4" or config.method != "affine":
        raise InvalidInput(f"Adapters are exported over an affine int4 base; {config.variant()} has no adapter "
                           "inputs. Choose precision int4, method affine.")
    if base.format != ModelFormat.HF:
        raise InvalidInput(f"'{base.id}' is a {base.format} model; adapters go with a full (hf) base model.")
    check_adapter_list(engine, config.adapters, base)


def check_add_adapters(engine, config: AddAdaptersConfig) -> None:
    """Adapters added to an export: one made with adapter inputs, from the base the adapters were trained on."""
    from .onnx_adapters import read_slots

    export = engine.ready_model(config.model_id)
    if export.format != ModelFormat.ONNX:
        raise InvalidInput(f"'{export.id}' is a {export.format} model, not an ONNX export. Export its base with "
                           "adapters (Quantize, adapters) instead.")
    read_slots(Path(export.path))
    base = engine.ready_model(export.parent_id)
    have = set(engine.adapters_of(export))
    clash = [name for name in config.adapters if name in have]
    if clash:
        raise InvalidInput(f"'{export.id}' has adapter {', '.join(clash)} already; add only new ones.")
    check_adapter_list(engine, config.adapters, base)


def check_adapter_list(engine, names: list[str], base) -> None:
    if len(set(names)) != len(names):
        raise InvalidInput("An adapter is listed twice; list each once.")
    for name in names:
        adapter = engine.ready_model(name)
        if adapter.format != ModelFormat.ADAPTER:
            raise InvalidInput(f"'{name}' is a {adapter.format} model, not a LoRA adapter.")
        if adapter.parent_id != base.id:
            raise InvalidInput(f"Adapter '{name}' was trained on '{adapter.parent_id}', not on '{base.id}': export "
                               f"it with its own base.")
        peft = json.loads((Path(adapter.path) / "adapter_config.json").read_text(encoding="utf-8"))
        targets = peft.get("target_modules") or []
        targets = [targets] if isinstance(targets, str) else targets
        outside = sorted({t for t in [*targets, *(peft.get("modules_to_save") or [])]
                          if any(word in t for word in ("lm_head", "embed"))})
        if outside:
            raise InvalidInput(f"Adapter '{name}' changes {', '.join(outside)}; the export has adapter inputs for "
                               "the attention and MLP matrices only. Export this adapter merged instead.")


def check_gguf(engine, config: GgufConfig) -> None:
    """Refuse a GGUF export that cannot work (format, architecture, task) before a run starts (names: Engine.check)."""
    from .gguf_export import check_architecture

    model = engine.ready_model(config.model_id)
    if model.format == ModelFormat.ONNX:
        raise InvalidInput(f"'{model.id}' is an ONNX export: GGUF needs its torch weights. Export its source "
                           f"'{model.parent_id}' to GGUF instead.")
    if model.format == ModelFormat.GGUF:
        raise InvalidInput(f"'{model.id}' is a GGUF export already; export its source '{model.parent_id}' to "
                           "another GGUF type instead.")
    check_architecture(Path(engine.weights_of(model)[0]))
    check_named_task(engine, config.task)


def check_calibration(engine, config: QuantizeConfig, model) -> None:
    """A calibrated int4 fit has data to calibrate on: the file named, readable, or the model's training data."""
    from .data import read_dataset
    from .int4_fit import training_data

    if config.precision != "int4" or config.method != "affine" or config.fit == "minmax":
        return
    if config.calibration_path:
        read_dataset(config.calibration_path)  # InvalidInput names the file and what is wrong with it
    elif config.fit == "gptq" and training_data(engine.store, model) is None:
        raise InvalidInput(f"fit 'gptq' needs calibration data, and the data '{model.id}' was trained on is not "
                           "known (or is gone). Set calibration_path to a chat or text file like its training data "
                           "(not the task's evaluation set), or use fit 'minmax'.")


def check_quantize_sweep(engine, config: QuantizeSweepConfig) -> dict:
    """A sweep's source can be exported (checked as its first candidate)."""
    return check_quantize(engine, config.candidate_configs()[0])


def check_benchmark(engine, config: BenchmarkConfig) -> None:
    """Every model is ready; the task, when one is named, exists and can be scored."""
    for model_id in config.model_ids:
        engine.ready_model(model_id)
    check_named_task(engine, config.task)
    if config.task and engine.get_task(config.task).scorer == "judge":
        raise InvalidInput(f"Task '{config.task}' is graded by a judge model, which would share the process whose "
                           "memory and speed the benchmark measures. Score each model with Evaluate instead.")


def check_evaluate(engine, config: EvaluateConfig) -> int:
    """The task exists and can be scored; the model is ready (an adapter's base too); returns the examples scored."""
    from .exports import scoring_export

    task = engine.get_task(config.task)
    model = engine.ready_model(config.model_id)
    engine.weights_of(model)
    scoring_export(engine.store, model, config.backend)
    count = check_scorable(engine, task)
    return min(count, config.limit) if config.limit else count
