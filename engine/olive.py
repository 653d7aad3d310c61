"""Fine-tune backend `olive`: Microsoft Olive's fine-tune workflow (its LoRA/QLoRA pass: peft + the HF Trainer) runs
as a child process — offline, telemetry off, its cache in the run folder — on the same split of the same data as our
backend (written as chat JSONL), with the same hyperparameters. Olive writes the workflow's config itself (`olive
finetune … --dry_run`); the data strategy is set in it (each example whole, as ours; `packing`: Olive's join) and
`olive run --config` runs it. Its steps and losses stream into the run, its error fails the run with Olive's own
words, and its adapter is scored and registered like our backend's. The run keeps the config and command.txt; any
fine-tune or quantize run can export one (`olive_config`)."""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from .errors import Cancelled, InvalidInput

PRE_PROCESS = "slmops_chat_pre_process"  # our chat pre-process, registered with Olive by engine/olive_data.py
ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # Olive passes target modules as a list
BAR = re.compile(r"(\d+)/(\d+) \[")  # the Trainer's tqdm bar: "12/200 [00:10<02:40, ...]"
LOSS = re.compile(r"'loss': '?([0-9.eE+-]+)'?")  # the Trainer's log line, one per step (logging_steps 1)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "OLIVE_DISABLE_TELEMETRY": "1"}


def olive_version() -> str:
    from importlib.metadata import version

    return version("olive-ai")


def write_training_data(conversations: list, path: Path) -> bool:
    """Our training split as JSONL for Olive's HF json loader: chat rows ({"messages": ...}, formatted by the
    model's chat template) or plain text rows. Returns whether the rows are chats."""
    chats = all(isinstance(c, list) for c in conversations)
    with open(path, "w", encoding="utf-8") as out:
        for c in conversations:
            out.write(json.dumps({"messages": c} if chats else {"text": str(c)}, ensure_ascii=False) + "\n")
    return chats


def olive_command(config, base_path: str, data_path: Path, output_dir: Path, chats: bool,
                  examples: int) -> list[str]:
    """`olive finetune` with the fine-tune config's settings (the Trainer's own flags pass through Olive) on all
    `examples` of the data file (the CLI's own default keeps the first 256)."""
    targets = config.target_modules.strip()
    schedule = ["--max_steps", str(config.max_steps)] if config.max_steps else \
        ["--num_train_epochs", str(config.epochs)]
    return [sys.executable, "-m", "olive", "finetune", "-m", base_path, "-d", "json", "--data_files", str(data_path),
            *(["--use_chat_template"] if chats else ["--text_field", "text"]),
            "--max_seq_len", str(config.max_length), "--max_samples", str(examples), "--method", config.method,
            "--lora_r", str(config.lora_r), "--lora_alpha", str(config.lora_alpha),
            "--target_modules", ALL_LINEAR if targets == "all-linear" else targets.replace(" ", ""),
            "--torch_dtype", "float32" if config.method == "lora" else "bfloat16",
            "-o", str(output_dir), "--disable_telemetry", "--log_level", "1",
            *schedule, "--learning_rate", str(config.learning_rate), "--lr_scheduler_type", config.lr_scheduler,
            # (transformers 5: warmup_steps below 1 is the share of the steps; warmup_ratio is gone)
            "--warmup_steps", str(config.warmup_ratio), "--per_device_train_batch_size", str(config.batch_size),
            "--gradient_accumulation_steps", str(config.grad_accum), "--seed", str(config.seed),
            "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none"]


def run_olive(ctx, command: list[str], cwd: Path, threads: int) -> dict:
    """Run the command, its output streamed into the run's log, bar and loss chart; cancel stops it. Returns the
    steps and the last loss. Raises RuntimeError with Olive's last words when it fails."""
    from .runner import die_with_parent

    env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    ctx.log("olive: " + " ".join(command[2:]))
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, preexec_fn=die_with_parent)  # text mode: tqdm's \r ends a line too
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: ([lines.put(x) for x in proc.stdout], lines.put(None)), daemon=True).start()
    tail, losses, step, total, trained = deque(maxlen=12), [], 0, 0, False
    try:
        while True:
            if ctx.cancelled:
                raise Cancelled("cancelled by request")
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            tail.append(line)
            if (bar := BAR.search(line)) and not line.startswith("{"):
                step, total = int(bar.group(1)), int(bar.group(2))
                ctx.progress(step / max(total, 1), f"olive: step {step}/{total}")
                continue
            if "'train_runtime'" in line:
                trained = True
            elif loss := LOSS.search(line):
                if trained:  # the bar's last refresh repeats loss lines already read
                    continue
                losses.append(float(loss.group(1)))
                ctx.metric("train_loss", losses[-1], len(losses))
            ctx.log(f"olive: {line[:500]}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"olive finetune failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return {"steps": step, "train_loss": losses[-1] if losses else None}


def check_olive(config) -> None:
    """What the Olive backend cannot do, said before the run starts."""
    if config.method == "full":
        raise InvalidInput("The Olive backend trains LoRA or QLoRA adapters: use method lora (or backend "
                           "transformers for full fine-tuning).")
    if config.resume_from_run is not None:
        raise InvalidInput("An Olive run does not continue from a checkpoint: start a new run.")


def finetune_config_file(config, base_path: str, train_conversations: list, folder: Path) -> Path:
    """A fine-tune as Olive's workflow config in `folder`: its training split as JSONL, the config Olive writes for
    `olive finetune` with its settings, and the data strategy set in it."""
    folder.mkdir(parents=True, exist_ok=True)
    chats = write_training_data(train_conversations, folder / "train.jsonl")
    command = olive_command(config, base_path, folder / "train.jsonl", folder / "output", chats,
                            len(train_conversations))
    return write_config(command, folder, data_strategy(config, chats, len(train_conversations)))


def train_with_olive(ctx, config, base, train_conversations: list) -> Path:
    """Olive's adapter folder, after Olive's fine-tune workflow ran in the run folder on the training split."""
    folder = ctx.workdir / "olive"
    path = finetune_config_file(config, base.path, train_conversations, folder)
    t0 = time.perf_counter()
    result = run_olive(ctx, [sys.executable, "-m", "olive", "run", "--config", str(path)], folder, config.threads)
    ctx.summary(backend="olive", olive_version=olive_version(), olive_train_s=round(time.perf_counter() - t0, 1),
                **{k: v for k, v in result.items() if v is not None})
    ctx.artifact("olive-config", path)
    ctx.artifact("olive-command", folder / "command.txt")
    adapter = folder / "output" / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise RuntimeError(f"olive finetune ended without an adapter in {adapter}")
    return adapter


def write_config(command: list[str], folder: Path, changes: dict[tuple, object] | None = None,
                 note: str | None = None) -> Path:
    """Olive's workflow config for `command`, written by Olive itself (a dry run), with `changes` (key path →
    value) set where its CLI has no working flag; command.txt says how it was made and how to run it (and `note`)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*command, "--dry_run"], cwd=folder, env={**os.environ, **OFFLINE_ENV},
                          capture_output=True, text=True, timeout=600)
    path = Path(command[command.index("-o") + 1]) / "config.json"
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"olive could not write the config (exit {done.returncode}):\n"
                           + "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:]))
    steps = [" ".join(["olive", *command[3:], "--dry_run"])]
    written = json.loads(path.read_text())
    for keys, value in (changes or {}).items():
        parent = written
        for key in keys[:-1]:
            parent = parent[key]
        parent[keys[-1]] = value
        steps.append(f"# then in {path.name}: {'.'.join(map(str, keys))} = {json.dumps(value)}")
    path.write_text(json.dumps(written, indent=4))
    steps.append(f"olive run --config {path}")
    if note:
        steps.append(f"# note: {note}")
    (folder / "command.txt").write_text("\n".join(steps) + "\n", encoding="utf-8")
    return path


def data_strategy(config, chats: bool, examples: int) -> dict[tuple, object]:
    """How Olive reads the data (its CLI has no flag for it). Chats, each example whole: our own pre-process
    (engine/olive_data.py, Olive's user script) so the loss is on the replies only, as in our backend — Olive's
    text-generation pre-process would train on the prompt too. With `packing`: Olive's join (its own default), as
    for plain text rows, where every token is trained on either way."""
    if chats and not config.packing:
        return {("data_configs", 0, "user_script"): str(Path(__file__).with_name("olive_data.py")),
                ("data_configs", 0, "pre_process_data_config"): {"type": PRE_PROCESS,
                                                                 "max_seq_len": config.max_length,
                                                                 "max_samples": examples}}
    return {("data_configs", 0, "pre_process_data_config", "strategy"): "join" if config.packing else "line-by-line"}


# ---- a run as an Olive config ----------------------------------------------------------------------------------
def olive_config(store, run, folder: Path) -> Path:
    """Olive's own workflow config (written by Olive in a dry run) that repeats a fine-tune or
    quantize run outside the dashboard with `olive run --config <that file>`, beside the command that makes it
    (command.txt) and, for a fine-tune, its training split. A fine-tune is repeated by Olive's LoRA pass with the
    run's settings (Olive trains on the whole chat text); a quantize run by Olive's Model Builder pass with the
    run's precision and block size — the builder's export, which an affine int4 export (our own kernel) starts
    from, not that export itself."""
    from .configs import FineTuneConfig, QuantizeConfig

    if run.kind == FineTuneConfig.kind:
        config = FineTuneConfig.model_validate_json(run.config_json)
        check_olive(config.model_copy(update={"resume_from_run": None}))
        from .training import split_conversations

        return finetune_config_file(config, store.get_model(config.model_id).path, split_conversations(config)[1],
                                    folder)
    if run.kind == QuantizeConfig.kind:
        config = QuantizeConfig.model_validate_json(run.config_json)
        # (the CLI's --int4_accuracy_level cannot parse a number in Olive 0.13: set in the config instead)
        level = {("passes", "m", "int4_accuracy_level"): config.accuracy_level} if config.precision == "int4" else {}
        return write_config(_builder_command(store, config, folder / "output"), folder, level, builder_problem())
    raise InvalidInput(f"Run {run.id} is a {run.kind} run; fine-tune and quantize runs export as Olive configs.")


def builder_problem() -> str | None:
    """Why Olive's Model Builder pass cannot run with the onnxruntime-genai installed here, or None."""
    import importlib.util

    from onnxruntime_genai import __version__ as genai

    if importlib.util.find_spec("onnxruntime_genai.models.quantized_model") is None:
        return (f"Olive {olive_version()}'s ModelBuilder pass imports onnxruntime_genai.models.quantized_model, "
                f"which onnxruntime-genai {genai} no longer has: this config runs where Olive and "
                "onnxruntime-genai match, not in this environment.")
    return None


def _builder_command(store, config, output_dir: Path) -> list[str]:
    """`olive capture-onnx-graph` with Model Builder for a quantize config (an adapter: its base, with it)."""
    from .records import ModelFormat

    if config.precision == "int8":
        raise InvalidInput("Olive's Model Builder pass exports fp32, fp16, bf16 or int4, not int8: export this "
                           "run's model as int4 or fp32 to get an Olive config.")
    model = store.get_model(config.model_id)
    source = ["-m", model.path]
    if model.format == ModelFormat.ADAPTER:
        source = ["-m", store.get_model(model.parent_id).path, "-a", model.path]
    elif model.format != ModelFormat.HF:
        raise InvalidInput(f"'{model.id}' is a {model.format} model; Olive exports full models and adapters.")
    int4 = ["--int4_block_size", str(config.block_size)] if config.precision == "int4" else []
    return [sys.executable, "-m", "olive", "capture-onnx-graph", *source, "--use_model_builder", "--use_ort_genai",
            "--precision", config.precision, *int4, "-o", str(output_dir),
            "--disable_telemetry", "--log_level", "1"]
