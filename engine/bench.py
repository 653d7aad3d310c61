"""Measuring one model the same way whatever its format: a backend with the same four calls for transformers
(with or without an adapter) and ONNX Runtime GenAI, the speed loop, and the quality scorers (perplexity on the
standard text, multiple-choice accuracy by log-likelihood, greedy tokens for agreement)."""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from .eval_text import log_softmax, windowed_nll
from .stats import half_width, median_interval
from .settings import PROJECT_ROOT
from .records import ModelFormat

MC_PATH = PROJECT_ROOT / "assets" / "eval" / "mc_questions.jsonl"


class TorchBackend:
    """transformers model on CPU (fp32), optionally with a LoRA adapter."""

    name = "transformers"

    def __init__(self, path: str, adapter_path: str | None = None, threads: int = 0):
        import torch

        from .loading import load_causal_lm

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model, self.tokenizer = load_causal_lm(path, adapter_path)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat_ids(self, prompt: str) -> list[int]:
        return self.messages_ids([{"role": "user", "content": prompt}])

    def messages_ids(self, messages: list[dict]) -> list[int]:
        from .chat import build_prompt_ids

        return build_prompt_ids(self.tokenizer, messages, "")[0].tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, ids: list[int], n: int, stop_at_eos: bool = False) -> tuple[list[int], list[float], float]:
        """Greedy; exactly n tokens unless stop_at_eos. Returns (tokens, arrival times, start time)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        torch, times = self.torch, []

        class Clock(StoppingCriteria):  # called once per generated token
            def __call__(self, input_ids, scores, **kw):
                times.append(time.perf_counter())
                return torch.zeros((input_ids.shape[0],), dtype=torch.bool)

        x = torch.tensor([ids])
        extra = {} if stop_at_eos else {"min_new_tokens": n}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                                      temperature=None, top_p=None, top_k=None, pad_token_id=pad,
                                      stopping_criteria=StoppingCriteriaList([Clock()]), **extra)
        return out[0, len(ids):].tolist(), times, t0

    def logits(self, ids: list[int]) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(input_ids=self.torch.tensor([ids])).logits[0].float().numpy()

    def batch_logits(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """One forward pass for several sequences (right-padded; a causal model ignores what follows)."""
        torch, width = self.torch, max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask).logits.float().numpy()
        return [out[i, :len(s)] for i, s in enumerate(seqs)]

    @property
    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}


class OgBackend:
    """ONNX Runtime GenAI export."""

    name = "onnxruntime-genai"

    def __init__(self, path: str, threads: int = 0):
        from .ort_genai import OgModel

        self.m = OgModel(path, threads=threads)

    def encode(self, text: str) -> list[int]:
        return self.m.encode(text)

    def chat_ids(self, prompt: str) -> list[int]:
        return self.messages_ids([{"role": "user", "content": prompt}])

    def messages_ids(self, messages: list[dict]) -> list[int]:
        return self.m.prompt_ids(messages)

    def decode(self, ids: list[int]) -> str:
        return self.m.decode(ids)

    def generate(self, ids: list[int], n: int, stop_at_eos: bool = False) -> tuple[list[int], list[float], float]:
        og = self.m.og
        params = og.GeneratorParams(self.m.model)
        options = {"max_length": len(ids) + n, "do_sample": False, "batch_size": 1}
        if not stop_at_eos:
            options["min_length"] = len(ids) + n  # EOS is not allowed before n tokens
        params.set_search_options(**options)
        t0 = time.perf_counter()
        gen = og.Generator(self.m.model, params)
        self.m.prefill(gen, ids)
        tokens, times = [], []
        while not gen.is_done() and len(tokens) < n:
            gen.generate_next_token()
            times.append(time.perf_counter())
            tokens.append(int(gen.get_next_tokens()[0]))
        return tokens, times, t0

    def logits(self, ids: list[int]) -> np.ndarray:
        return self.m.logits(ids)

    def batch_logits(self, seqs: list[list[int]]) -> list[np.ndarray]:
        return self.m.shared_prefix_logits(seqs)

    @property
    def eos_ids(self) -> set[int]:
        return set(self.m.eos_ids)


def open_backend(fmt: str, path: str, adapter_path: str | None = None, threads: int = 0):
    if fmt == ModelFormat.ONNX:
        return OgBackend(path, threads)
    return TorchBackend(path, adapter_path, threads)


def perplexity(backend, text: str, n_tokens: int, window: int = 512) -> tuple[float, int]:
    """Perplexity over the first n_tokens of `text`, non-overlapping windows; (ppl, tokens scored)."""
    total, count = windowed_nll(backend.logits, backend.encode(text)[:n_tokens], window)
    return math.exp(total / max(count, 1)), count


def load_mc(path: Path = MC_PATH, limit: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def option_logprobs(backend, context: str, options: list[str]) -> list[float]:
    """Sum of log-probabilities of each option's tokens after the context (lm-eval style: tokenize the whole
    string and the context, score the tail). Batched when the backend can."""
    ctx = backend.encode(context)
    seqs = []
    for option in options:
        full = backend.encode(context + option)
        if full[:len(ctx)] != ctx or len(full) == len(ctx):  # a merge across the boundary: score it alone
            full = ctx + backend.encode(option)
        seqs.append(full)
    batch = getattr(backend, "batch_logits", None)
    all_logits = batch(seqs) if batch else [backend.logits(s) for s in seqs]
    scores = []
    for full, logits in zip(seqs, all_logits):
        positions = np.arange(len(ctx) - 1, len(full) - 1)  # the rows that predict the option's tokens
        logp = log_softmax(logits[positions])
        scores.append(float(logp[np.arange(len(positions)), np.asarray(full[len(ctx):])].sum()))
    return scores


def mc_accuracy(backend, questions: list[dict]) -> tuple[float, list[int]]:
    """Share of questions whose highest-likelihood option is the answer; also the picks."""
    picks = []
    for q in questions:
        scores = option_logprobs(backend, f"Question: {q['question']}\nAnswer:", [" " + c for c in q["choices"]])
        picks.append(int(np.argmax(scores)))
    correct = sum(int(p == q["answer"]) for p, q in zip(picks, questions))
    return correct / max(len(questions), 1), picks


class SpeedTimer:
    """One model's speed measurement, a repetition at a time: `speed` runs them in a row; the benchmark job takes
    turns between several models' timers (in their own processes), so drift hits all of them alike. A repetition
    times each prompt once (time to first token, prefill and decode tok/s of the set's totals); the result is their
    medians with 95 % intervals (median_interval) and std. `warm` makes `warmup` untimed calls first (the prompts in
    turn, full length: allocations and caches reach their working size). At least `reps` repetitions; with a
    `budget_s`, more until decode's interval is within ±`target` of its median (which needs six or more) or this
    timer's own repetitions have taken the budget. Tokenization happened before."""

    def __init__(self, backend, prompts: list[list[int]], new_tokens: int, reps: int, warmup: int,
                 check=lambda: None, budget_s: float = 0.0, target: float = 0.03, max_reps: int = 100):
        self.backend, self.prompts, self.new_tokens, self.check = backend, prompts, new_tokens, check
        self.reps, self.warmup, self.budget_s, self.target, self.max_reps = reps, warmup, budget_s, target, max_reps
        self.ttft, self.prefill, self.decode, self.calls, self.spent, self.empty = [], [], [], 0, 0.0, False

    def warm(self) -> None:
        for i in range(self.warmup):
            self.check()
            self.backend.generate(self.prompts[i % len(self.prompts)], self.new_tokens)

    def settled(self) -> bool:
        if self.empty:
            return True  # nothing decodes two tokens: no speed to measure
        if len(self.decode) < self.reps:
            return False
        if self.budget_s <= 0 or len(self.decode) >= self.max_reps or self.spent >= self.budget_s:
            return True
        return len(self.decode) >= 6 and half_width(self.decode) <= self.target

    def repeat(self) -> None:
        """One timed repetition of the prompt set."""
        started = time.perf_counter()
        first_s, prompt_tokens, decoded, decode_s = [], 0, 0, 0.0
        for ids in self.prompts:
            self.check()
            _, times, t0 = self.backend.generate(ids, self.new_tokens)
            if len(times) < 2:
                continue
            self.calls += 1
            first_s.append(times[0] - t0)
            prompt_tokens += len(ids)
            decoded += len(times) - 1
            decode_s += times[-1] - times[0]
        self.spent += time.perf_counter() - started
        if not first_s:
            self.empty = True
            return
        self.ttft.append(sum(first_s) / len(first_s))
        self.prefill.append(prompt_tokens / sum(first_s))
        self.decode.append(decoded / decode_s)

    def result(self) -> dict:
        out = {"timed_calls": self.calls, "repetitions": len(self.decode),
               "decode_tok_s_reps": [round(v, 1) for v in self.decode], "speed_s": round(self.spent, 1)}
        for name, values in (("ttft_s", self.ttft), ("prefill_tok_s", self.prefill), ("decode_tok_s", self.decode)):
            if values:
                out[name], out[f"{name}_low"], out[f"{name}_high"] = median_interval(values)
                out[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if self.decode:
            out["decode_half_width"] = round(half_width(self.decode), 4)
        return out


def speed(backend, prompts: list[list[int]], new_tokens: int, reps: int, warmup: int, check=lambda: None,
          budget_s: float = 0.0, target: float = 0.03, max_reps: int = 100) -> dict:
    """One model's speed, its repetitions in a row (SpeedTimer)."""
    timer = SpeedTimer(backend, prompts, new_tokens, reps, warmup, check, budget_s, target, max_reps)
    timer.warm()
    while not timer.settled():
        timer.repeat()
    return timer.result()


def bandwidth_probe(threads: int = 2, megabytes: int = 512, repeats: int = 3) -> float:
    """Memory read bandwidth in GB/s: `threads` threads each summing its share of a float32 array far larger than
    the caches (numpy releases the GIL in the reduction), best of `repeats`."""
    from concurrent.futures import ThreadPoolExecutor

    data = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.add.reduce, parts))  # pages touched, threads started
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(np.add.reduce, parts))
            best = min(best, time.perf_counter() - t0)
    return data.nbytes / best / 1e9


def noise_probe(repeats: int = 12) -> float:
    """The machine's timing noise floor: the 95 % interval half-width (relative, median_interval) of a fixed
    ~10 ms compute workload timed `repeats` times. Speed differences below it cannot be told from noise."""
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for _ in range(20):
            a @ a
        times.append(time.perf_counter() - t0)
    return half_width(times[1:])


def machine_probes(threads: int) -> dict:
    """What a speed figure on this machine is worth, measured now: read bandwidth and the noise floor."""
    return {"bandwidth_gb_s": round(bandwidth_probe(max(threads, 1)), 1),
            "noise_floor_pct": round(100 * noise_probe(), 2)}


def greedy_tokens(backend, prompts: list[list[int]], n: int) -> list[list[int]]:
    out = []
    for ids in prompts:
        tokens, _, _ = backend.generate(ids, n, stop_at_eos=True)
        eos = backend.eos_ids
        out.append([t for t in tokens[:next((i for i, t in enumerate(tokens) if t in eos), len(tokens))]])
    return out


def task_score(backend, task, limit: int = 0) -> dict:
    """The backend's score on a task (engine.tasks.Task): greedy answers, one example at a time, stopped at EOS."""
    from .tasks import load_examples, score_answers

    def answer(prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
        ids = [backend.messages_ids(p) for p in prompts]
        return [backend.decode(t).strip() for t in greedy_tokens(backend, ids, max_new_tokens)]

    result = score_answers(task, load_examples(task, limit), answer)
    return {"task": task.name, "task_score": result["score"], "task_ci_low": result["ci_low"],
            "task_ci_high": result["ci_high"], "task_examples": len(result["rows"])}


def agreement(a: list[list[int]], b: list[list[int]], n: int) -> float:
    """Share of prompts whose first n greedy tokens are identical."""
    pairs = list(zip(a, b))
    return sum(int(x[:n] == y[:n]) for x, y in pairs) / max(len(pairs), 1)


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name as the driver reports it (no torch import); None without one."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    return names[0] if names else None


def hardware_record(threads: int) -> dict:
    import contextlib
    import os
    import platform
    from importlib import metadata

    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}  # the installed distributions' versions: importing the five libraries took 7.6 s
    for mod, dists in (("torch", ["torch"]), ("transformers", ["transformers"]),
                       ("onnxruntime", ["onnxruntime", "onnxruntime-gpu"]),
                       ("onnxruntime_genai", ["onnxruntime-genai", "onnxruntime-genai-cuda"]), ("peft", ["peft"])):
        versions[mod] = None  # a missing library is recorded as missing
        for dist in dists:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[mod] = metadata.version(dist)
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads or os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpu": gpu_name(),
            "python": platform.python_version(),
            "execution_provider": "CPUExecutionProvider", **{f"{k}_version": v for k, v in versions.items()}}
