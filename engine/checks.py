"""Up-front checks for the distillation jobs (fine-tuning's live in Engine.check_finetune): what can be known
before a run starts is checked here, so a bad input never becomes a failed run."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from .configs import DistillConfig, GenerateDataConfig
from .errors import InvalidInput

LAYER = re.compile(r"\.layers\.(\d+)\.")


def check_generate(engine, config: GenerateDataConfig) -> int:
    """The teacher is a ready full model and the prompts load; returns the number of prompts."""
    from .jobs.generate import load_prompts

    teacher = engine.ready_model(config.teacher_model_id)
    if teacher.format != "hf":
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


def check_distill(engine, config: DistillConfig) -> dict:
    """Teacher, student and data can work together; returns the student preview."""
    from transformers import AutoTokenizer

    from .distill import check_same_tokenizer

    teacher = engine.ready_model(config.teacher_model_id)
    if teacher.format != "hf":
        raise InvalidInput(f"'{teacher.id}' is a {teacher.format} model; use a full model as the teacher.")
    preview = student_preview(engine, config)
    if config.student == "existing":
        student = engine.ready_model(config.student_model_id)
        if student.format != "hf":
            raise InvalidInput(f"'{student.id}' is a {student.format} model; the student must be a full model.")
        check_same_tokenizer(AutoTokenizer.from_pretrained(teacher.path), AutoTokenizer.from_pretrained(student.path),
                             teacher.id, student.id)
    paths = [config.train_path] + ([config.eval_path] if config.eval_path else [])
    errors = [f"{r.path}: {e}" for p in paths
              for r in [engine.validate_dataset(teacher.id, p, config.max_length, config.columns)] for e in r.errors]
    if errors:
        raise InvalidInput("The dataset has problems; fix them and validate again:\n- " + "\n- ".join(errors))
    return preview
