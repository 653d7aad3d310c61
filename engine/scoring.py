"""Held-out scoring by generation: greedy answers to eval prompts compared with the references."""
from __future__ import annotations

import json
from dataclasses import dataclass


def _as_json_object(text: str):
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def pick_mode(references: list[str], mode: str) -> str:
    """'auto' becomes 'json' when every reference is a JSON object, else 'exact'."""
    if mode != "auto":
        return mode
    return "json" if references and all(_as_json_object(r) is not None for r in references) else "exact"


def matches(prediction: str, reference: str, mode: str) -> bool:
    if mode == "json":
        got = _as_json_object(prediction)
        return got is not None and got == _as_json_object(reference)
    return prediction.strip() == reference.strip()


@dataclass(frozen=True)
class ScoreResult:
    mode: str
    correct: int
    total: int
    samples: list[tuple[str, str, bool]]  # (prediction, reference, ok) for the first few, to show in the log

    @property
    def score(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a pass rate (stays inside [0, 1] and is sane at 0/n and n/n)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def split_conversation(conversation: list[dict]) -> tuple[list[dict], str]:
    """Prompt messages (everything before the last assistant turn) and that turn's text."""
    last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
    return conversation[:last], conversation[last]["content"]


def chat_prompt_ids(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    """Each chat prompt's token ids, ready for the assistant's reply."""
    return [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            for p in prompts]


def generate_batch(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy replies for several chat prompts at once (one batch of greedy_ids)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    replies = greedy_ids(model, chat_prompt_ids(tokenizer, prompts), max_new_tokens, pad, {tokenizer.eos_token_id},
                         batch_size=max(len(prompts), 1))
    return tokenizer.batch_decode(replies, skip_special_tokens=True)


def greedy_ids(model, prompts: list[list[int]], max_new_tokens: int, pad_id: int, stop_ids: set[int],
               batch_size: int = 16, on_batch=None) -> list[list[int]]:
    """Greedy replies (token ids, up to and including the first of `stop_ids`) to prompts given as token ids,
    generated batch by batch with left padding; `on_batch(done, total)` hears after each batch."""
    import torch

    replies = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=model.device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=pad_id)
        for reply in out[:, width:].tolist():
            cut = next((j + 1 for j, t in enumerate(reply) if t in stop_ids), len(reply))
            replies.append(reply[:cut])
        if on_batch is not None:
            on_batch(len(replies), len(prompts))
    return replies


def answerer(model, tokenizer):
    """answer(prompts, max_new_tokens) → stripped greedy replies of a transformers model (engine.tasks.score_answers
    calls it batch by batch)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()

    def answer(prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
        return [a.strip() for a in generate_batch(model, tokenizer, prompts, max_new_tokens)]
    return answer


def answerer_for(store, model, backend: str = "auto", threads: int = 0):
    """(description, answer) for a registered model: an ONNX export answers itself; a full model or adapter answers
    on its fastest verified export when it has one (backend "auto"), else on transformers, batched."""
    from .exports import scoring_export
    from .loading import load_causal_lm, weights_of

    export = scoring_export(store, model, backend)
    if export is not None:
        from .ort_genai import OgModel

        return f"onnxruntime-genai ({export.id})", OgModel(export.path, threads=threads).answer
    import torch

    if threads:
        torch.set_num_threads(threads)
    lm, tokenizer = load_causal_lm(*weights_of(store, model))
    return f"transformers fp32 ({model.id})", answerer(lm, tokenizer)


def judge_for(store, task):
    """The answerer of a judge task's judge model (engine.tasks.score_answers grades with it); None for the other
    scorers."""
    if task.scorer != "judge":
        return None
    from .errors import InvalidInput

    judge = store.get_model(task.judge_model)
    if not judge.ready:
        raise InvalidInput(f"The judge model '{judge.id}' of task '{task.name}' is {judge.status}, not ready.")
    return answerer_for(store, judge)[1]


def score_by_generation(model, tokenizer, conversations: list[list[dict]], mode: str, max_new_tokens: int,
                        batch_size: int = 16, on_batch=None) -> ScoreResult:
    pairs = [split_conversation(c) for c in conversations]
    mode = pick_mode([ref for _, ref in pairs], mode)
    was_training = model.training
    model.eval()
    correct, samples = 0, []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        replies = generate_batch(model, tokenizer, [p for p, _ in chunk], max_new_tokens)
        for reply, (_, ref) in zip(replies, chunk):
            ok = matches(reply, ref, mode)
            correct += ok
            if len(samples) < 5:
                samples.append((reply.strip(), ref, ok))
        if on_batch is not None:
            on_batch(min(start + batch_size, len(pairs)), len(pairs))
    if was_training:
        model.train()
    return ScoreResult(mode, correct, len(pairs), samples)
