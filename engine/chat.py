"""Chat generation with any registered model: a small per-process model cache and token streaming.

Choice: a process keeps at most `Settings.max_loaded_models` models in memory (default 2, so side-by-side chat
does not reload on every message); the least recently used one is dropped when another is needed.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from .configs import GenerationParams
from .errors import InvalidInput
from .loading import load_causal_lm
from .records import ChatChunk, ModelFormat


class LoadedModels:
    """LRU cache of (model, tokenizer) keyed by model id; loads are serialized so a model is loaded once."""

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str, path: str, adapter_path: str | None = None, fmt: str = ModelFormat.HF):
        """(model, tokenizer) for torch formats; (OgModel, None) for an ONNX Runtime GenAI export."""
        with self._lock:
            key = f"{model_id}@{path}+{adapter_path}"
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            while len(self._items) >= self.capacity:
                close(self._items.popitem(last=False)[1][0])
            if fmt == ModelFormat.ONNX:
                from .ort_genai import OgModel

                self._items[key] = (OgModel(path), None)
            else:
                self._items[key] = load_causal_lm(path, adapter_path)
            return self._items[key]

    def drop(self, model_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k.split("@", 1)[0] == model_id]:
                close(self._items.pop(key)[0])

    def clear(self) -> None:
        with self._lock:
            for model, _ in self._items.values():
                close(model)
            self._items.clear()

    def loaded(self) -> list[str]:
        return [k.split("@", 1)[0] for k in self._items]


def close(model) -> None:
    """A dropped ONNX model's batch thread ends once its generations are done (torch models have nothing to end)."""
    from .ort_genai import OgModel

    if isinstance(model, OgModel):
        model.close()


def build_prompt_ids(tokenizer, messages: list[dict], system_prompt: str):
    """Token ids of the conversation with the model's chat template (plain 'role: text' lines if it has none)."""
    full = ([{"role": "system", "content": system_prompt}] if system_prompt.strip() else []) + list(messages)
    for m in full:
        if m.get("role") not in {"system", "user", "assistant"} or not isinstance(m.get("content"), str):
            raise InvalidInput("Each chat message needs a role (system/user/assistant) and text content.")
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(full, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        return enc["input_ids"]
    text = "".join(f"{m['role']}: {m['content']}\n" for m in full) + "assistant:"
    return tokenizer(text, return_tensors="pt")["input_ids"]


def stream_reply(model, tokenizer, messages: list[dict], params: GenerationParams,
                 stop: threading.Event | None = None) -> Iterator[ChatChunk]:
    """Generate a reply token by token in a background thread, yielding the text so far."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = stop or threading.Event()  # set by the caller (stop button, cancelled run)
    abandoned = threading.Event()  # set here when the consumer stops reading (closed tab, generator closed)
    input_ids = build_prompt_ids(tokenizer, messages, params.system_prompt)
    context = getattr(model.config, "max_position_embeddings", None)
    if context and input_ids.shape[1] + 1 > context:
        raise InvalidInput(f"The conversation is {input_ids.shape[1]} tokens, longer than the model's context of "
                           f"{context}. Clear the chat or shorten the message.")
    max_new = min(params.max_new_tokens, context - input_ids.shape[1]) if context else params.max_new_tokens
    times: list[float] = []

    class _Stop(StoppingCriteria):
        def __call__(self, ids, scores, **kwargs):
            times.append(time.perf_counter())  # called once per generated token
            return torch.full((ids.shape[0],), stop.is_set() or abandoned.is_set(), dtype=torch.bool)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p} \
        if params.temperature > 0 else {"do_sample": False}
    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new,
                  streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop()]),
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                  else tokenizer.eos_token_id, **sampling)
    if not sampling["do_sample"]:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    errors: list[BaseException] = []

    def work():
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)
            streamer.end()

    t0 = time.perf_counter()
    thread = threading.Thread(target=work, name="slmops-generate", daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield ChatChunk(text, len(times), (times[0] - t0) if times else None, None)
    finally:
        abandoned.set()  # if the consumer went away early, generation ends at the next token
        thread.join()
    if errors:
        raise errors[0]
    n = len(times)
    speed = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else None
    yield ChatChunk(text, n, (times[0] - t0) if times else None, speed, done=True,
                    prompt_tokens=int(input_ids.shape[1]))
