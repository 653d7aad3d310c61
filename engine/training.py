"""Pieces of the fine-tuning recipe: data -> tokenized datasets, the model (LoRA or full), the Trainer callback
that reports to the run, checkpoints, and the up-front memory estimate."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .configs import FineTuneConfig
from .errors import InvalidInput

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---- data -------------------------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    train: object  # datasets.Dataset with input_ids / labels / attention_mask
    eval: object
    eval_conversations: list  # the held-out conversations, for the generation score
    shape: str
    truncated: int


def _conversations(path: str, columns: dict):
    from .data import detect_shape, read_dataset, to_conversation

    ds = read_dataset(path)
    shape, mapping = detect_shape(ds.column_names, columns or None)
    return ds, shape, [to_conversation(row, shape, mapping) for row in ds]


def split_conversations(config: FineTuneConfig) -> tuple[object, list, list]:
    """(shape, train conversations, held-out conversations) of a fine-tune's data: its eval file, or the seeded
    split of its train file (the same split every time, so an adapter's held-out examples can be found again)."""
    from datasets import Dataset

    from .data import split_dataset

    _, shape, train_conv = _conversations(config.train_path, config.columns)
    if config.eval_path:
        return shape, train_conv, _conversations(config.eval_path, config.columns)[2]
    indexed = Dataset.from_dict({"i": list(range(len(train_conv)))})
    tr, ev = split_dataset(indexed, config.eval_ratio, config.seed)
    return shape, [train_conv[i] for i in tr["i"]], [train_conv[i] for i in ev["i"]]


def prepare_data(config: FineTuneConfig, tokenizer) -> PreparedData:
    """Load, split (seeded), tokenize with prompt masking, optionally pack."""
    from datasets import Dataset

    from .data import encode_example

    shape, train_conv, eval_conv = split_conversations(config)
    encoded_train = [encode_example(tokenizer, c, config.max_length) for c in train_conv]
    encoded_eval = [encode_example(tokenizer, c, config.max_length) for c in eval_conv]
    truncated = sum(e["truncated"] for e in encoded_train)
    if config.packing:
        encoded_train = pack(encoded_train, config.max_length)
    keep = ("input_ids", "labels", "attention_mask")

    def to_ds(rows):
        rows = [r for r in rows if any(label != -100 for label in r["labels"])]  # nothing to learn: drop
        return Dataset.from_dict({k: [r[k] for r in rows] for k in keep})

    train, evald = to_ds(encoded_train), to_ds(encoded_eval)
    if len(train) == 0:
        raise InvalidInput(f"{config.train_path}: no example has a trainable (assistant) part within "
                           f"{config.max_length} tokens. Raise max_length or check the data.")
    scored = [c for c in eval_conv if isinstance(c, list)]
    return PreparedData(train, evald, scored, shape.value if hasattr(shape, "value") else str(shape), truncated)


def pack(encoded: list[dict], max_length: int) -> list[dict]:
    """Concatenate examples (labels keep their masks) and cut into blocks of max_length."""
    ids, labels = [], []
    for e in encoded:
        ids.extend(e["input_ids"])
        labels.extend(e["labels"])
    blocks = []
    for start in range(0, len(ids), max_length):
        chunk_ids, chunk_labels = ids[start:start + max_length], labels[start:start + max_length]
        blocks.append({"input_ids": chunk_ids, "labels": chunk_labels, "attention_mask": [1] * len(chunk_ids),
                       "truncated": False})
    return blocks


# ---- model ------------------------------------------------------------------------------------------------------
def qlora_unavailable_reason() -> str | None:
    """Why QLoRA cannot run here, or None when it can (it needs a CUDA GPU and bitsandbytes)."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "QLoRA needs a CUDA GPU; none is available on this machine."
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA needs the bitsandbytes package (pip install bitsandbytes)."
    return None


def build_model(config: FineTuneConfig, base_path: str):
    """The base model, wrapped with LoRA adapters unless this is full fine-tuning."""
    import torch

    from .loading import load_model

    kwargs = {}
    if config.method == "qlora":
        reason = qlora_unavailable_reason()
        if reason:
            raise InvalidInput(reason + " Use method 'lora' instead.")
        import os

        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # 4-bit weights live on this GPU
    model = load_model(base_path, **kwargs)
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules.strip()
    target = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # e.g. target modules not found in the model
        names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise InvalidInput(f"LoRA target modules '{targets}' do not fit this model ({exc}). Linear layers it has: "
                           f"{', '.join(names)}; or use 'all-linear'.") from None


def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# ---- estimates --------------------------------------------------------------------------------------------------
def estimate_memory_bytes(config: FineTuneConfig, model_dir: str | Path, params: int) -> dict:
    """A formula, not a measurement: fp32 weights + gradients and Adam state of what trains + activations."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    hidden = cfg.get("hidden_size", 1024)
    layers = cfg.get("num_hidden_layers", 12)
    vocab = cfg.get("vocab_size", 32000)
    inter = cfg.get("intermediate_size", 4 * hidden)
    if config.method == "full":
        trainable = params
    else:
        per_layer = 2 * config.lora_r * hidden * (7 if config.target_modules == "all-linear" else
                                                 len(config.target_modules.split(",")))
        trainable = per_layer * layers
    tokens = config.batch_size * config.max_length
    # per token and layer: attention and MLP activations kept for backward (fp32), roughly 8*hidden + 3*inter floats
    activations = tokens * layers * (8 * hidden + 3 * inter) * 4
    logits = tokens * vocab * 4 * 3  # logits, their softmax and gradient
    weights = params * 4
    optimizer = trainable * 4 * 3  # gradient + two Adam moments
    total = int(1.2 * (weights + optimizer + activations + logits))  # 20 % for the allocator and the runtime
    return {"weights": weights, "optimizer": optimizer, "activations": activations + logits, "total": total,
            "trainable_estimate": trainable}


def probe_step_seconds(config: FineTuneConfig, base_path: str, steps: int = 2) -> float:
    """Time optimizer steps on a real batch of the data (the last of `steps` counts: the first warms up)."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    from .data import encode_example
    from .loading import load_tokenizer

    tokenizer = load_tokenizer(base_path, pad=True)
    _, _, conversations = _conversations(config.train_path, config.columns)
    rows = [encode_example(tokenizer, c, config.max_length) for c in conversations[:config.batch_size]]
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    batch = collate([{k: r[k] for k in ("input_ids", "labels", "attention_mask")} for r in rows])
    model = build_model(config, base_path)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    seconds = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        for _ in range(config.grad_accum):
            model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds = time.perf_counter() - t0
    return seconds


def save_for_inference(model, tokenizer, folder) -> None:
    """Save a trained model to serve: its KV cache switched back on (training leaves config.use_cache False, and
    a model saved so generates without a cache: a distilled student scored its task 1.9× slower than its teacher)."""
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = True
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


# ---- checkpoints ------------------------------------------------------------------------------------------------
def last_checkpoint(run_dir: Path) -> Path | None:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    # the Trainer writes trainer_state.json last: a checkpoint without it was cut short (worker killed mid-save)
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


# ---- the Trainer run shared by fine-tuning and distillation ------------------------------------------------------
class TrainingSession:
    """Trainer set up from a config with the fields FineTuneConfig and DistillConfig share: checkpoints in the run
    folder, resume from an earlier run's last checkpoint, progress/loss/tokens-per-second reporting, cancel."""

    def __init__(self, ctx, config, model, tokenizer, data, trainer_cls=None, **trainer_kwargs):
        import os

        import torch
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        self.ctx, self.config = ctx, config
        self.resume_from = None
        if config.resume_from_run is not None:
            self.resume_from = last_checkpoint(ctx.settings.runs_dir / str(config.resume_from_run))
            if self.resume_from is None:
                raise InvalidInput(f"run {config.resume_from_run} left no checkpoint to resume from")
            ctx.log(f"resuming from {self.resume_from}")
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        args = TrainingArguments(
            output_dir=str(ctx.workdir / "checkpoints"), per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
            num_train_epochs=config.epochs, max_steps=config.max_steps or -1, learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, logging_steps=1,
            eval_strategy="steps", eval_steps=config.eval_steps, save_strategy="steps", save_steps=config.save_steps,
            save_total_limit=config.save_total_limit, seed=config.seed, data_seed=config.seed, report_to="none",
            disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
            prediction_loss_only=True,  # evaluation reports the loss; gathering every eval logit only costs memory
            ddp_find_unused_parameters=False if distributed else None,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=8)
        self.reporter = make_callback(ctx)
        self.trainer = (trainer_cls or Trainer)(
            model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, data_collator=collator,
            processing_class=tokenizer, callbacks=[self.reporter], **trainer_kwargs)
        device = args.device
        ctx.log(f"training on {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    def time_step(self) -> float:
        """Seconds an optimizer step takes here, measured before training: forward and backward passes on the first
        training batch (twice, the faster counts: the first pays for allocations) times grad_accum. The gradients
        are dropped and the random state is put back, so the training that follows is the same as without it."""
        import torch

        trainer, model = self.trainer, self.trainer.model
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        was_training = model.training
        try:
            batch = next(iter(trainer.get_train_dataloader()))
            batch = {k: v.to(trainer.args.device) if hasattr(v, "to") else v for k, v in batch.items()}
            model.train()
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                trainer.compute_loss(model, batch).backward()
                times.append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            model.train(was_training)
        return min(times) * self.config.grad_accum

    def train(self):
        """Train (resuming when asked); raise Cancelled when the run was cancelled (a checkpoint is kept)."""
        from .errors import Cancelled

        result = self.trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        steps = self.trainer.state.global_step
        if self.reporter.cancelled:
            raise Cancelled(f"cancelled at step {steps}; checkpoint kept for resume")
        seconds, tokens = self.reporter.train_seconds, self.reporter.tokens
        self.ctx.summary(train_s=round(seconds, 1), steps=steps, train_loss=round(result.training_loss, 4),
                         train_tokens_per_s=round(tokens / seconds, 1) if seconds else None)
        return result


# ---- progress reporting -----------------------------------------------------------------------------------------
def make_callback(ctx, total_steps_hint: int | None = None):
    """A TrainerCallback that writes progress, losses and tokens/s to the run, and stops on cancel (checkpointing
    first, so a cancelled run can be resumed)."""
    from transformers import TrainerCallback

    class RunReporter(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.tokens0 = 0
            self.tokens = 0  # trained tokens (padding excluded) and the seconds they took, this session only:
            self.train_seconds = 0.0  # from the start of training to the end of its last step (no final save)
            self.cancelled = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()
            self.tokens0 = state.num_input_tokens_seen or 0

        def on_step_end(self, args, state, control, **kwargs):
            total = state.max_steps or total_steps_hint or 1
            self.train_seconds = time.perf_counter() - self.t0
            self.tokens = (state.num_input_tokens_seen or 0) - self.tokens0
            ctx.progress(state.global_step / total, f"step {state.global_step}/{total}")
            if self.train_seconds > 0 and self.tokens:
                ctx.metric("train_tokens_per_s", self.tokens / self.train_seconds, state.global_step)
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_save = True  # always checkpoint the last step, so a finished run can be continued
            if ctx.cancelled:
                self.cancelled = True
                control.should_save = True  # checkpoint now, then stop: the run stays resumable
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "kd_loss", "ce_loss", "epoch"):
                if logs and key in logs:
                    ctx.metric(key if key != "loss" else "train_loss", float(logs[key]), state.global_step)

    return RunReporter()


def finetune_config_of(store, model) -> FineTuneConfig:
    """The fine-tune config that made `model` (an adapter or a merged model): its fine-tune run's, or its row's in
    the adapter set that trained it. Raises (NotFound, StopIteration, ValidationError) when there is none."""
    from .configs import AdapterSetConfig

    run = store.get_run(model.run_id)
    if run.kind != AdapterSetConfig.kind:
        return FineTuneConfig.model_validate_json(run.config_json)
    config = AdapterSetConfig.model_validate_json(run.config_json)
    return set_member_config(store, config, next(a for a in config.adapters
                                                 if model.id in (a.name, f"{a.name}-merged")))


def set_member_config(store, config, spec) -> FineTuneConfig:
    """The fine-tune of one adapter of a set (AdapterSetConfig.adapter_config), its task's evaluation set held out
    when it names a task (NotFound when the task is not stored)."""
    from .tasks import Task

    task = Task.model_validate_json(store.task_json(spec.task)) if spec.task else None
    return config.adapter_config(spec, task.eval_path if task else None)
