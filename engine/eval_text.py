"""Perplexity, written once: the standard text (English prose that ships with Python itself, `pydoc_data.topics`, so
nobody on this project wrote it and every machine has the same copy), its non-overlapping windows, and the NLL of a
token sequence under any backend's logits (torch, ONNX Runtime GenAI, the benchmark's backends)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def standard_text(max_chars: int = 400_000) -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))[:max_chars]


def log_softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def token_nll(logits, target) -> float:
    """Summed negative log-likelihood of `target` under `logits` [n, vocab] (float64 log-softmax)."""
    return float(-log_softmax(logits)[np.arange(len(target)), np.asarray(target)].sum())


def windows(ids: list[int], window: int = 512) -> list[list[int]]:
    """`ids` cut into non-overlapping windows; a last window shorter than 2 tokens (nothing to predict) is dropped."""
    return [w for w in (ids[s:s + window] for s in range(0, max(len(ids) - 1, 0), window)) if len(w) >= 2]


def windowed_nll(logits_of: Callable[[list[int]], np.ndarray], ids: list[int], window: int = 512) -> tuple[float, int]:
    """Total NLL and the number of tokens scored over `ids`, one forward pass (`logits_of`) per window."""
    total, count = 0.0, 0
    for w in windows(ids, window):
        total += token_nll(np.asarray(logits_of(w))[:-1], w[1:])
        count += len(w) - 1
    return total, count


def torch_logits(model) -> Callable[[list[int]], np.ndarray]:
    """logits_of for a transformers causal LM (inference mode, float32 numpy)."""
    import torch

    def logits_of(ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float().cpu().numpy()
    return logits_of


def standard_text_nll(model, tokenizer, n_tokens: int = 4096, window: int = 512) -> float:
    """Mean NLL per token of a transformers model over the first `n_tokens` tokens of the standard text."""
    model.eval()
    ids = tokenizer(standard_text(), add_special_tokens=False)["input_ids"][:n_tokens]
    total, count = windowed_nll(torch_logits(model), ids, window)
    return total / max(count, 1)
