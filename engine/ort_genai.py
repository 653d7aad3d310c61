"""Running ONNX Runtime GenAI exports: load, stream chat replies, score perplexity from logits, time decoding."""
from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .configs import GenerationParams
from .errors import InvalidInput


class OgModel:
    """An onnxruntime-genai model with its tokenizer. `threads` 0 keeps the runtime's default. An export with LoRA
    adapters (engine/onnx_adapters.py) runs the base, or one adapter in `with_adapter(name)`'s view of it."""

    adapter: str | None = None  # the adapter this view generates with (None: the base)
    batcher = None  # engine/batch_decode.py's Batcher once `batch` turned it on
    unbatched: str | None = None  # why `batch` could not

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime_genai as og

        self.path = Path(path)
        self.og = og
        self.threads = int(threads)
        config = og.Config(str(self.path))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": int(threads), "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        genai = json.loads((self.path / "genai_config.json").read_text(encoding="utf-8"))["model"]
        self.decoder_config = genai.get("decoder", {})
        self.context = int(genai.get("context_length") or 2048)
        self.eos_ids = genai.get("eos_token_id")
        self.eos_ids = set(self.eos_ids if isinstance(self.eos_ids, list) else [self.eos_ids])
        self.vocab_size = int(genai.get("vocab_size") or 0)
        template = self.path / "chat_template.jinja"
        self.chat_template = template.read_text(encoding="utf-8") if template.is_file() else None
        self._adapters, self._adapters_loaded = None, set()
        self._lock = threading.Lock()  # loading an adapter or the batch: once, whichever thread asks first
        library = self.decoder_config.get("session_options", {}).get("custom_ops_library")
        self.kernel_library = self.path / library if library and (self.path / library).is_file() else None

    def prefill(self, gen, prompt_ids: list[int]) -> None:
        """Runs the prompt for generation: with the slmops kernels, the head computes its last position only (the
        others' logits are left unwritten: generation reads none of them; `logits` computes them all)."""
        from .kernels import last_position_only

        with last_position_only(self.kernel_library):
            gen.append_tokens(np.asarray([prompt_ids], dtype=np.int32))

    def batch(self, max_batch: int) -> None:
        """From now on the base's generations (not an adapter's) are decoded together, at most `max_batch` at once
        (engine/batch_decode.py); an export that cannot be batched goes on decoding each alone (`unbatched` says
        why)."""
        from .batch_decode import Batcher

        with self._lock:
            if self.batcher is not None:
                self.batcher.max_batch = max(self.batcher.max_batch, int(max_batch))
            elif self.unbatched is None:
                try:
                    self.batcher = Batcher(self.path, self.decoder_config, self.eos_ids, self.context, max_batch,
                                           self.threads, self.kernel_library)
                except ValueError as exc:
                    self.unbatched = str(exc)

    def close(self) -> None:
        """Ends the batch's thread (if any) once its generations are done."""
        if self.batcher is not None:
            self.batcher.close()

    # ---- adapters -------------------------------------------------------------------------------------------
    def adapter_names(self) -> list[str]:
        from .onnx_adapters import adapter_names

        return adapter_names(self.path)

    def with_adapter(self, name: str | None, file: Path | None = None) -> OgModel:
        """This model generating with adapter `name` (loaded once, then shared by every view; None: the base) from
        the export's adapters folder or `file`. Views share the weights: each generation activates its own adapter,
        so concurrent ones may differ."""
        if not name:
            return self
        with self._lock:
            if name not in self._adapters_loaded:
                from .onnx_adapters import ADAPTER_SUFFIX, ADAPTERS_DIR

                file = file or self.path / ADAPTERS_DIR / f"{name}{ADAPTER_SUFFIX}"
                if not file.is_file():
                    known = ", ".join(self.adapter_names()) or "none"
                    raise InvalidInput(f"The export {self.path.name} has no adapter '{name}' (adapters: {known}).")
                if self._adapters is None:
                    self._adapters = self.og.Adapters(self.model)
                self._adapters.load(str(file), name)
                self._adapters_loaded.add(name)
        view = copy.copy(self)
        view.adapter = name
        return view

    # ---- tokens ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(np.asarray(ids, dtype=np.int32))

    def prompt_ids(self, messages: list[dict], system_prompt: str = "") -> list[int]:
        full = ([{"role": "system", "content": system_prompt}] if system_prompt.strip() else []) + list(messages)
        for m in full:
            if m.get("role") not in {"system", "user", "assistant"} or not isinstance(m.get("content"), str):
                raise InvalidInput("Each chat message needs a role (system/user/assistant) and text content.")
        text = self.tokenizer.apply_chat_template(json.dumps(full), template_str=self.chat_template,
                                                  add_generation_prompt=True) \
            if self.chat_template else self.tokenizer.apply_chat_template(json.dumps(full),
                                                                          add_generation_prompt=True)
        return self.encode(text)

    # ---- generation ------------------------------------------------------------------------------------------
    def generator(self, max_length: int, params: GenerationParams | None = None, seed: int | None = None):
        og = self.og
        gp = og.GeneratorParams(self.model)
        options = {"max_length": int(max_length), "batch_size": 1}
        if params is not None and params.temperature > 0:
            # top_k 50 as transformers' default generation config does
            options.update(do_sample=True, temperature=float(params.temperature), top_p=float(params.top_p),
                           top_k=50)
            if seed is not None:
                options["random_seed"] = int(seed)
        else:
            options.update(do_sample=False)
        gp.set_search_options(**options)
        gen = og.Generator(self.model, gp)
        if self.adapter:
            gen.set_active_adapter(self._adapters, self.adapter)
        return gen

    def generate_ids(self, prompt_ids: list[int], max_new_tokens: int, params: GenerationParams | None = None,
                     stop: threading.Event | None = None, on_token=None,
                     seed: int | None = None) -> tuple[list[int], list[float]]:
        """Generate after `prompt_ids`; returns the new ids and the time each token (EOS too) arrived."""
        out, times = [], []
        for token, t in self.iter_tokens(prompt_ids, max_new_tokens, params, stop, seed):
            times.append(t)
            if token in self.eos_ids:
                break
            out.append(token)
            if on_token is not None:
                on_token(token)
        return out, times

    def answer(self, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
        """Greedy, stripped replies to chat prompts, one at a time (engine.tasks.score_answers calls it)."""
        return [self.decode(self.generate_ids(self.prompt_ids(p), max_new_tokens)[0]).strip() for p in prompts]

    def iter_tokens(self, prompt_ids: list[int], max_new_tokens: int, params: GenerationParams | None = None,
                    stop: threading.Event | None = None, seed: int | None = None) -> Iterator[tuple[int, float]]:
        """(token, arrival time) for each generated token until EOS (included), the limit or `stop`."""
        if len(prompt_ids) + 1 > self.context:
            raise InvalidInput(f"The prompt is {len(prompt_ids)} tokens, longer than the model's context of "
                               f"{self.context}. Shorten it or clear the chat.")
        batched = self.batcher.submit(prompt_ids, max_new_tokens, params, stop, seed) \
            if self.batcher is not None and not self.adapter else None
        if batched is not None:
            yield from batched
            return
        gen = self.generator(min(self.context, len(prompt_ids) + int(max_new_tokens)), params, seed)
        self.prefill(gen, prompt_ids)
        count = 0
        while not gen.is_done() and count < max_new_tokens:
            if stop is not None and stop.is_set():
                return
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            count += 1
            yield token, time.perf_counter()
            if token in self.eos_ids:
                return

    def stream_reply(self, messages: list[dict], params: GenerationParams,
                     stop: threading.Event | None = None) -> Iterator:
        from .records import ChatChunk

        ids = self.prompt_ids(messages, params.system_prompt)
        stream = self.tokenizer.create_stream()
        t0 = time.perf_counter()
        text, times = "", []
        for token, t in self.iter_tokens(ids, params.max_new_tokens, params, stop):
            times.append(t)
            if token in self.eos_ids:
                break
            text += stream.decode(token)
            yield ChatChunk(text, len(times), times[0] - t0, None)
        n = len(times)
        speed = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else None
        yield ChatChunk(text, n, (times[0] - t0) if times else None, speed, done=True, prompt_tokens=len(ids))

    # ---- scoring ---------------------------------------------------------------------------------------------
    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits [len(ids), vocab] of one forward pass over `ids`."""
        if len(ids) > self.context:
            raise InvalidInput(f"{len(ids)} tokens are more than the model's context of {self.context}.")
        gen = self.generator(min(len(ids) + 1, self.context))
        gen.append_tokens(np.asarray([ids], dtype=np.int32))
        out = np.asarray(gen.get_output("logits"), dtype=np.float32)
        return out.reshape(-1, out.shape[-1])[-len(ids):]

    def shared_prefix_logits(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """logits(s) for each of `seqs`, running their common prefix once: the prefix goes into the KV cache,
        each tail is appended after it and rewound (multiple-choice options share the question)."""
        prefix = common_prefix(seqs)
        longest = max((len(s) for s in seqs), default=0)
        if len(seqs) < 2 or prefix == 0 or longest > self.context:
            return [self.logits(s) for s in seqs]
        gen = self.generator(min(longest + 1, self.context))
        gen.append_tokens(np.asarray([seqs[0][:prefix]], dtype=np.int32))
        head = np.asarray(gen.get_output("logits"), dtype=np.float32)
        head = head.reshape(-1, head.shape[-1])[-prefix:]
        out = []
        for s in seqs:
            gen.append_tokens(np.asarray([s[prefix:]], dtype=np.int32))
            tail = np.asarray(gen.get_output("logits"), dtype=np.float32)
            out.append(np.concatenate([head, tail.reshape(-1, tail.shape[-1])[-(len(s) - prefix):]]))
            gen.rewind_to(prefix)
        return out


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the prefix all `seqs` share, leaving each at least one token of its own."""
    n = 0
    while seqs and all(len(s) > n + 1 for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n
