"""Continuous batching for an ONNX Runtime GenAI export: the generations running at once on one model share each
decode step (one pass over the weights for all of them), joining and leaving between steps.

onnxruntime-genai batches only generations that start together (a static batch, its prompts left-padded, which
changes attention's numerics) or, through `og.Engine`, models with paged-attention KV caches, which CPU exports do
not have. So the step is run here on ONNX Runtime itself over the export's own `model.onnx`: each sequence keeps
its KV cache in a row of one buffer per layer (past and present the same memory, as genai's share-buffer mode),
right-padded, and the attention mask gives each row its own length, so GroupQueryAttention attends over each
sequence's own positions and writes its new key at its own end. A prompt runs alone (batch 1, into its row) before
the sequence joins. Every row of a step therefore computes what the sequence computes alone — the fused kernels
give a row the same bits whatever the other rows (tests/test_q41_kernel.py) — and a greedy reply is the one the
sequence gets alone (tests/test_serve_batching.py).

Sampling (temperature > 0) is done here on each row's logits as `OgModel.generator` asks onnxruntime-genai to do
it (temperature, top-k 50, then top-p), with numpy's generator; the draws differ from genai's for the same seed.
An export whose graph takes more than the ids, mask, positions and KV cache (adapter slots: their inputs select
an adapter per generation) is not batched (`unsupported` says why) and runs each generation on its own as before.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .configs import GenerationParams

TOP_K = 50  # as OgModel.generator (transformers' default generation config)
# The most rows a step decodes: from 32 rows the LM head's kernel (Q80MatMul) switches to its float GEMM, whose
# logits differ from a row's alone in the last bits (engine/kernels/kernels.h, kGemmRows; the Q4_1 GEMM gives every
# row its one-row bits).
MAX_ROWS = 31
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def unsupported(inputs: dict[str, str], layers: int) -> str | None:
    """Why a decoder graph with `inputs` (name → ONNX type) cannot be batched here, or None when it can."""
    kv = {f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")}
    extra = sorted(set(inputs) - kv - {"input_ids", "attention_mask", "position_ids"})
    if extra:
        return f"its graph takes more inputs than ids, mask and KV cache ({', '.join(extra[:3])})"
    if not kv <= set(inputs) or "input_ids" not in inputs or "attention_mask" not in inputs:
        return "its graph lacks the input_ids, attention_mask and past_key_values.N.key/value inputs"
    if {inputs[name] for name in kv} - set(_DTYPES):
        return "its KV cache is neither float32 nor float16"
    return None


@dataclass
class _Sequence:
    prompt: list[int]
    max_new: int
    params: GenerationParams | None
    stop: threading.Event | None
    rng: np.random.Generator
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    length: int = 0  # positions in the KV cache
    produced: int = 0
    last: int = 0
    abandoned: bool = False  # the consumer stopped reading

    def done(self) -> bool:
        return self.abandoned or (self.stop is not None and self.stop.is_set())


class Batcher:
    """Decodes the generations submitted to one export together, on a thread of its own; at most `max_batch` at
    once (more wait for a row; never more than MAX_ROWS). `eos`: token ids that end a generation; `context`: the
    longest sequence."""

    min_capacity = 256  # KV positions a row starts with; a longer sequence doubles them (copying the running rows)

    def __init__(self, path: str | Path, decoder: dict, eos: set[int], context: int, max_batch: int = 8,
                 threads: int = 0, kernel_library: Path | None = None):
        """`decoder`: the export's genai_config.json model.decoder section. ValueError when the export's graph
        cannot be batched here (`unsupported`)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if kernel_library is not None:
            options.register_custom_ops_library(str(kernel_library))
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        self.session = ort.InferenceSession(str(Path(path) / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.ort, self.eos, self.context = ort, set(eos), int(context)
        self.max_batch = max_batch
        self.kernel_library = kernel_library
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        reason = unsupported(inputs, int(decoder["num_hidden_layers"]))
        if reason:
            raise ValueError(f"{Path(path).name} is not batched: {reason}")
        self.kv_names = sorted(n for n in inputs if n.startswith("past_key_values."))
        self.kv_heads, self.head_size = int(decoder["num_key_value_heads"]), int(decoder["head_size"])
        self.kv_dtype = _DTYPES[inputs[self.kv_names[0]]]
        self.ids_dtype = np.int32 if inputs["input_ids"] == "tensor(int32)" else np.int64
        self.mask_dtype = np.int32 if inputs["attention_mask"] == "tensor(int32)" else np.int64
        self.positions = "position_ids" in inputs
        self.vocab = int(self.session.get_outputs()[0].shape[-1])
        self._kv: dict[str, np.ndarray] = {}  # name → [max_batch, heads, capacity, head_size]
        self._capacity = 0
        self._active: list[_Sequence] = []
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._wake, self._lock = threading.Event(), threading.Lock()
        self._closed = False
        self._binding = None  # (rows, io binding, logits buffer) for the current rows
        self.widest = 0  # the most sequences one step has decoded (tests and benchmarks read it)
        self.step_tokens, self.step_seconds = 0, 0.0  # tokens the decode steps made, and their time (benchmarks)
        self._thread = threading.Thread(target=self._loop, name="slmops-batcher", daemon=True)
        self._thread.start()

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @max_batch.setter
    def max_batch(self, rows: int) -> None:
        self._max_batch = min(MAX_ROWS, max(1, int(rows)))

    # ---- the caller's side ------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], max_new_tokens: int, params: GenerationParams | None = None,
               stop: threading.Event | None = None,
               seed: int | None = None) -> Iterator[tuple[int, float]] | None:
        """(token, arrival time) for each generated token until EOS (included), the limit or `stop` — as
        `OgModel.iter_tokens`, decoded in the batch; None once closed (the caller generates alone)."""
        seq = _Sequence(list(prompt_ids), min(int(max_new_tokens), self.context - len(prompt_ids)), params, stop,
                        np.random.default_rng(seed))
        with self._lock:
            if self._closed:
                return None
            self._waiting.put(seq)
        self._wake.set()
        return self._read(seq)

    @staticmethod
    def _read(seq: _Sequence) -> Iterator[tuple[int, float]]:
        stop = seq.stop
        try:
            while True:
                item = seq.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if stop is not None and stop.is_set():
                    return
                yield item
        finally:
            seq.abandoned = True  # ends it at the next step if it is still running

    def close(self) -> None:
        """Ends the thread once the running and waiting generations are done; later ones are refused (`submit`)."""
        with self._lock:
            self._closed = True
        self._wake.set()

    # ---- the batch's thread -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._admit()
            self._drop_finished()  # a first token can end a generation
            if not self._active:
                with self._lock:
                    if self._closed and self._waiting.empty():
                        return
                self._kv, self._capacity, self._binding = {}, 0, None  # memory back while idle
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - every running generation gets the error, the thread goes on
                for seq in self._active:
                    seq.out.put(exc)
                self._active, self._binding = [], None

    def _admit(self) -> None:
        while len(self._active) < self.max_batch:
            try:
                seq = self._waiting.get_nowait()
            except queue.Empty:
                return
            if seq.done():
                seq.out.put(None)
                continue
            try:
                self._prefill(seq)
            except Exception as exc:  # noqa: BLE001 - this generation fails alone
                seq.out.put(exc)

    def _reserve(self, length: int) -> None:
        """A KV row for one more sequence, `length` positions long (grown by copying what the running ones hold)."""
        rows = len(self._active)
        allocated = next(iter(self._kv.values())).shape[0] if self._kv else 0
        if length <= self._capacity and rows < allocated:
            return
        capacity = self._capacity if length <= self._capacity else \
            min(self.context, max(length, 2 * self._capacity, self.min_capacity))
        shape = (max(self.max_batch, rows + 1), self.kv_heads, capacity, self.head_size)
        grown = {name: np.zeros(shape, self.kv_dtype) for name in self.kv_names}
        for name, old in self._kv.items():
            grown[name][:rows, :, :self._capacity] = old[:rows]
        self._kv, self._capacity, self._binding = grown, capacity, None

    def _bind_kv(self, io, rows: slice) -> None:
        value = self.ort.OrtValue.ortvalue_from_numpy
        for name in self.kv_names:
            kv = value(self._kv[name][rows])  # a view: the session reads and writes the buffer in place
            io.bind_ortvalue_input(name, kv)
            io.bind_ortvalue_output(name.replace("past_key_values", "present"), kv)

    def _prefill(self, seq: _Sequence) -> None:
        from .kernels import last_position_only

        self._reserve(len(seq.prompt) + seq.max_new)
        row = len(self._active)
        io = self.session.io_binding()
        n = len(seq.prompt)
        io.bind_cpu_input("input_ids", np.asarray([seq.prompt], self.ids_dtype))
        io.bind_cpu_input("attention_mask", np.ones((1, n), self.mask_dtype))
        if self.positions:
            io.bind_cpu_input("position_ids", np.arange(n, dtype=self.ids_dtype)[None])
        io.bind_output("logits")
        self._bind_kv(io, slice(row, row + 1))
        with last_position_only(self.kernel_library):
            self.session.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()[0, -1]
        seq.length = n
        self._active.append(seq)
        self._binding = None
        self._emit(seq, logits)

    def _step(self) -> None:
        started = time.perf_counter()
        rows = len(self._active)
        if self._binding is None or self._binding[0] != rows:
            io = self.session.io_binding()
            logits = np.empty((rows, 1, self.vocab), np.float32)
            io.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
            self._bind_kv(io, slice(0, rows))
            self._binding = (rows, io, logits)
        _, io, logits = self._binding
        lengths = np.array([s.length for s in self._active])
        width = int(lengths.max()) + 1
        io.bind_cpu_input("input_ids", np.array([[s.last] for s in self._active], self.ids_dtype))
        io.bind_cpu_input("attention_mask",
                          (np.arange(width)[None, :] <= lengths[:, None]).astype(self.mask_dtype))
        if self.positions:
            io.bind_cpu_input("position_ids", lengths[:, None].astype(self.ids_dtype))
        self.session.run_with_iobinding(io)
        self.widest = max(self.widest, rows)
        for seq, row in zip(self._active, logits[:, 0]):
            seq.length += 1
            self._emit(seq, row)
        self._drop_finished()
        self.step_tokens += rows
        self.step_seconds += time.perf_counter() - started

    def _emit(self, seq: _Sequence, logits: np.ndarray) -> None:
        seq.last = self._pick(seq, logits)
        seq.produced += 1
        seq.out.put((seq.last, time.perf_counter()))

    def _pick(self, seq: _Sequence, logits: np.ndarray) -> int:
        params = seq.params
        if params is None or params.temperature <= 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / params.temperature
        top = np.argpartition(scaled, -TOP_K)[-TOP_K:]
        top = top[np.argsort(scaled[top])[::-1]]
        probs = np.exp(scaled[top] - scaled[top[0]])
        probs /= probs.sum()
        # the smallest set reaching top_p
        keep = min(len(top), int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
        probs = probs[:keep] / probs[:keep].sum()
        return int(top[seq.rng.choice(keep, p=probs)])

    def _drop_finished(self) -> None:
        """Ends the sequences at EOS, their limit or their stop, moving the last rows into the freed ones."""
        keep = []  # (row, sequence) of the ones going on
        for row, seq in enumerate(self._active):
            if seq.last in self.eos or seq.produced >= seq.max_new or seq.done():
                seq.out.put(None)
            else:
                keep.append((row, seq))
        if len(keep) == len(self._active):
            return
        for new_row, (old_row, seq) in enumerate(keep):
            if old_row != new_row:
                for kv in self._kv.values():
                    kv[new_row, :, :seq.length] = kv[old_row, :, :seq.length]
        self._active, self._binding = [seq for _, seq in keep], None
