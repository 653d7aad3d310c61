"""Distillation pieces: a student derived from the teacher's layers, the KD Trainer, and teacher-vs-student
evaluation (held-out NLL, greedy agreement, general perplexity, decode speed)."""
from __future__ import annotations

import math
import re
import time

from .errors import InvalidInput

LAYER_KEY = re.compile(r"^(.*\.layers\.)(\d+)(\..+)$")


def derive_student(teacher, layers: list[int]):
    """A student with the teacher's embeddings, final norm, head and the chosen layers (weights copied)."""
    import copy

    from transformers import AutoModelForCausalLM

    n = teacher.config.num_hidden_layers
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    for name, value in list(vars(config).items()):  # per-layer lists (e.g. layer_types) follow the kept layers
        if isinstance(value, list) and len(value) == n and name != "architectures":
            setattr(config, name, [value[i] for i in layers])
    student = AutoModelForCausalLM.from_config(config)
    source = teacher.state_dict()
    mapped = {}
    for key in student.state_dict():
        m = LAYER_KEY.match(key)
        mapped[key] = source[f"{m[1]}{layers[int(m[2])]}{m[3]}" if m else key]
    student.load_state_dict(mapped)
    return student


def decoder_layers(model):
    """The decoder's list of layers (model.model.layers in Llama-style models), or InvalidInput."""
    import torch

    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise InvalidInput(f"{type(model).__name__} has no list of decoder layers (model.model.layers) that a "
                           "student can be derived from. Use an existing student, or a Llama-style teacher.")
    return layers


def response_loss(model, batches) -> float:
    """Mean cross-entropy on the response tokens (labels != -100) of (input_ids, attention_mask, labels) batches;
    the head runs only where a label is, so a calibration pass costs little more than the layers."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            ids, mask, labels = (t.to(model.device) for t in batch)
            keep = response_positions(labels)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits.float()
            total += float(F.cross_entropy(logits, labels[:, 1:][keep[:, :-1]], reduction="sum"))
            count += int(keep.sum())
    return total / max(count, 1)


def removal_costs(model, batches, keep: list[int], check=lambda: None) -> tuple[float, dict[int, float]]:
    """(the response loss with only the `keep` layers, how much it rises when each of them is skipped as well).
    Skipping a layer passes its input straight on (the residual stream), which is what removing it from a student
    does. The model is left whole. `check()` runs before each measurement (a cancelled run stops there)."""
    import torch

    layers = decoder_layers(model)
    n = len(layers)

    def loss_with(kept: list[int]) -> float:
        check()
        model.model.layers = torch.nn.ModuleList(layers[i] for i in kept)
        model.config.num_hidden_layers = len(kept)
        return response_loss(model, batches)

    try:
        base = loss_with(keep)
        return base, {i: loss_with([j for j in keep if j != i]) - base for i in keep}
    finally:
        model.model.layers, model.config.num_hidden_layers = layers, n


def layer_importance(model, batches) -> tuple[float, list[float]]:
    """(the full model's response loss, how much it rises when each decoder layer alone is skipped)."""
    base, rises = removal_costs(model, batches, list(range(len(decoder_layers(model)))))
    return base, [rises[i] for i in sorted(rises)]


def select_layers(model, batches, keep: int, on_round=None,
                  check=lambda: None) -> tuple[list[int], list[dict[int, float]]]:
    """The `keep` layers to build a student from, by measured importance, removing in rounds: each round measures
    what skipping each remaining layer costs and drops the cheapest half of those still to go (so the later
    choices see the earlier removals; 5 rounds for 30 → 10 layers). Returns the layers and each round's costs.
    Measured on SmolLM2 fine-tuned on request_to_json (loss of 32 held-out answers before training, 10 of 30
    layers): evenly spaced 14.8, top-10 of a single round 11.9, these rounds 7.5."""
    current = list(range(len(decoder_layers(model))))
    rounds = []
    while len(current) > keep:
        _, costs = removal_costs(model, batches, current, check)
        rounds.append(costs)
        drop = sorted(current, key=lambda i: costs[i])[:max(1, (len(current) - keep + 1) // 2)]
        current = [i for i in current if i not in drop]
        if on_round is not None:
            on_round(len(rounds), len(current))
    return current, rounds


def check_same_tokenizer(teacher_tok, student_tok, teacher_id: str, student_id: str) -> None:
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise InvalidInput(f"Student '{student_id}' does not share the teacher '{teacher_id}' tokenizer (vocabularies "
                           "differ), so their token distributions cannot be compared. Pick a student from the same "
                           "family, or derive one from the teacher's layers.")


def response_positions(labels):
    """The boolean mask of the positions that predict a response token (position i predicts token i+1)."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep


def row_key(ids, mask) -> bytes:
    """An example's identity in the teacher cache: its token ids without padding (either side)."""
    import torch

    return ids[mask.bool()].to("cpu", torch.int32).numpy().tobytes()


def teacher_top_k(teacher, batches, k: int, temperature: float, check=lambda: None, on_batch=None) -> dict:
    """The teacher's answer, computed once: for each example (keyed by `row_key`), at every position that predicts a
    response token, its k most likely next tokens with their log-probabilities at `temperature` (normalised over
    the whole vocabulary) and the log of the probability left to all other tokens. `batches` are
    (input_ids, attention_mask, labels) tensors. Training then needs no teacher forward pass per step."""
    import torch

    cache = {}
    with torch.inference_mode():
        for n, batch in enumerate(batches, 1):
            check()
            ids, mask, labels = (t.to(teacher.device) for t in batch)
            keep = response_positions(labels)
            logits = teacher(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float() / temperature
            logp = torch.log_softmax(logits, -1)
            top, idx = logp.topk(min(k, logp.shape[-1] - 1), -1)  # at least one token in the tail
            tail = torch.logsumexp(logp.scatter(1, idx, float("-inf")), -1)
            counts = keep.sum(1).tolist()
            for row, (start, count) in enumerate(zip([0, *torch.tensor(counts).cumsum(0).tolist()], counts)):
                cache[row_key(ids[row], mask[row])] = (top[start:start + count].clone(),
                                                       idx[start:start + count].clone(),
                                                       tail[start:start + count].clone())
            if on_batch is not None:
                on_batch(n)
    return cache


def top_k_kl(student_logits, top, idx, tail):
    """KL(teacher‖student) per position over the teacher's top-k tokens plus one bucket for all other tokens (the
    exact KL of the two distributions with the tail tokens merged; equal to the full KL as the teacher's tail
    mass goes to 0). `student_logits` are already divided by the temperature; `top`/`tail` are the teacher's log
    probabilities from `teacher_top_k`."""
    import torch

    lse = torch.logsumexp(student_logits, -1)
    logq = student_logits.gather(1, idx) - lse[:, None]
    logq_tail = torch.logsumexp(student_logits.scatter(1, idx, float("-inf")), -1) - lse
    p, p_tail = top.exp(), tail.exp()
    return (p * (top - logq)).sum(-1) + p_tail * (tail - logq_tail)


def make_distill_trainer(teacher, alpha: float, temperature: float, cache: dict | None = None):
    """A Trainer whose loss is α·T²·KL(teacher‖student) on response tokens + (1−α)·CE; logs both parts. Both models
    take `logits_to_keep` as a boolean mask (transformers' Llama-style models do). With `cache` (from
    `teacher_top_k`) the teacher's side comes from it and the KL is over its top-k tokens plus the rest as one
    bucket; a batch with an example not in the cache runs the teacher (the exact KL)."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    def cached(ids, mask):
        rows = [cache.get(row_key(i, m)) for i, m in zip(ids, mask)] if cache else [None]
        if any(r is None for r in rows):
            return None
        return tuple(torch.cat(part).to(ids.device) for part in zip(*rows))

    class DistillTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            teacher.to(self.args.device)  # the teacher runs beside the student: on its GPU when it trains on one
            self.model_accepts_loss_kwargs = False  # the Trainer scales for gradient accumulation itself
            self._parts = {"kd_loss": [], "ce_loss": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels, ids, mask = inputs["labels"], inputs["input_ids"], inputs["attention_mask"]
            # the head runs only where a response token is predicted: on the bundled task that is under half the
            # positions, and the head is ~40 % of a 10-layer student's work
            keep = response_positions(labels)
            out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep)
            ce = F.cross_entropy(out.logits.float(), labels[:, 1:][keep[:, :-1]])
            if alpha > 0:
                s = out.logits.float() / temperature
                hit = cached(ids, mask)
                if hit is not None:
                    kd = top_k_kl(s, *hit).mean() * temperature ** 2
                else:
                    with torch.no_grad():
                        t = teacher(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits / temperature
                    kd = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True,
                                  reduction="batchmean") * temperature ** 2
                loss = alpha * kd + (1 - alpha) * ce
            else:
                kd = torch.zeros((), device=ce.device)
                loss = ce
            if model.training:
                self._parts["kd_loss"].append(float(kd.detach()))
                self._parts["ce_loss"].append(float(ce.detach()))
            return (loss, out) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs:
                for name, values in self._parts.items():
                    if values:
                        logs[name] = sum(values) / len(values)
                        values.clear()
            super().log(logs, *args, **kwargs)

    return DistillTrainer


# ---- evaluation -------------------------------------------------------------------------------------------------
def response_nll(model, dataset, batch_size: int, pad_id: int) -> float:
    """Mean negative log-likelihood per response token (labels != -100) over a tokenized dataset."""
    import torch

    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        width = max(len(x) for x in rows["input_ids"])
        ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in rows["input_ids"]], device=model.device)
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in rows["labels"]], device=model.device)
        mask = torch.tensor([x + [0] * (width - len(x)) for x in rows["attention_mask"]], device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        logp = torch.log_softmax(logits[keep].float(), -1)
        total += float(-logp.gather(1, target[keep].unsqueeze(1)).sum())
        count += int(keep.sum())
    return total / max(count, 1)


def greedy_tokens(model, tokenizer, prompts: list[list[dict]], n: int, batch_size: int = 16) -> list[list[int]]:
    """The first n greedy tokens for each chat prompt (shorter when the model stops first)."""
    from .scoring import chat_prompt_ids, greedy_ids

    return greedy_ids(model, chat_prompt_ids(tokenizer, prompts), n, tokenizer.pad_token_id,
                      {tokenizer.eos_token_id}, batch_size)


def decode_tokens_per_s(model, tokenizer, new_tokens: int = 48, repeats: int = 3) -> float:
    """Greedy decode speed on a fixed prompt, prefill excluded: one token at a time through the KV cache, the
    median over repeats (after one warm-up). A hand loop, not `generate`: on a 2-core CPU generate's own per-token
    work hid the model's cost (a 10-of-30-layer student measured 0.96× its teacher through generate, 1.93× here)."""
    import statistics

    import torch

    messages = [{"role": "user", "content": "Write a short paragraph about the history of the bicycle."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"].to(model.device)
    speeds = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms up
            out = model(input_ids=ids, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(new_tokens):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            token.tolist()  # on a GPU the steps run asynchronously: wait for the last one
            speeds.append(new_tokens / (time.perf_counter() - t0))
    return statistics.median(speeds[1:])


def perplexity(nll: float) -> float:
    return math.exp(min(nll, 50.0))
