"""A fine-tune's change to its parent's weights, found in two fp32 ONNX exports, so int4 keeps it.

Rounding a fine-tuned matrix to 4 bits erases a small update: a LoRA update of the bundled model is smaller than half
a Q4_1 step in 99.9 % of its entries, so min/max rounding puts the merged weights back on the parent's grid (a task
the fine-tune answered 99/100 went to 10/100). Here the update is taken apart from the weights it was added to:

- low rank (a merged LoRA adapter: rank r per matrix, 2r for the builder's packed q/k/v): the export quantizes the
  parent's matrix (exact for a Q4_1 parent) and adds x·A·B in fp32 beside it, so the update is kept exactly;
- full rank and erased by 4-bit rounding (a full fine-tune): that matrix goes to 8-bit blocks.

Both graphs come from the same builder on models of one architecture, so weights are matched by initializer name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_RANK = 64  # a larger update is stored as 8-bit blocks instead (A and B would cost more than the bytes they save)
LOW_RANK_TOLERANCE = 1e-6  # share of the update's energy a low-rank factorisation may leave out
UNCHANGED = 1e-7  # an update this small against the weights (relative Frobenius norm) is float noise
KEEP_SHARE = 0.5  # 4-bit rounding that keeps less than this share of a full-rank update → 8-bit blocks


@dataclass
class Delta:
    """How one weight matrix [K, N] of the fine-tuned model is exported."""
    parent: np.ndarray  # the parent's weights [K, N]
    a: np.ndarray | None = None  # [K, r]: the update is a @ b (low rank) …
    b: np.ndarray | None = None  # [r, N]
    eight_bit: bool = False  # … or the fine-tuned weights go to 8-bit blocks

    @property
    def rank(self) -> int:
        return 0 if self.a is None else int(self.a.shape[1])


def low_rank(d: np.ndarray, max_rank: int = MAX_RANK, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(A [K, r], B [r, N]) with A @ B == d up to LOW_RANK_TOLERANCE of its energy, or None when d needs more than
    max_rank. A randomized range finder (Halko et al.) costs K·N·(max_rank + 8), not a full SVD."""
    d = d.astype(np.float64)
    energy = float((d * d).sum())
    probe = min(max_rank + 8, *d.shape)
    omega = np.random.default_rng(seed).standard_normal((d.shape[1], probe))
    q, _ = np.linalg.qr(d @ omega)
    r_mat = q.T @ d
    if float(((d - q @ r_mat) ** 2).sum()) > LOW_RANK_TOLERANCE * energy:
        return None
    u, s, vt = np.linalg.svd(r_mat, full_matrices=False)
    tail = np.cumsum((s ** 2)[::-1])[::-1]  # tail[i]: energy of singular values i, i+1, …
    rank = int(np.searchsorted(-tail, -LOW_RANK_TOLERANCE * energy))  # first i whose tail is within tolerance
    rank = max(rank, 1)
    if rank > max_rank:
        return None
    a = (q @ u[:, :rank]) * s[:rank]
    return a.astype(np.float32), vt[:rank].astype(np.float32)


def kept_share(w: np.ndarray, parent: np.ndarray, quantize) -> float:
    """Share of the update w − parent that survives `quantize` (a function [K, N] → dequantized [K, N]): the
    projection of Q(w) − Q(parent) onto the update, over its squared norm."""
    d = (w - parent).astype(np.float64)
    dq = (quantize(w) - quantize(parent)).astype(np.float64)
    return float((dq * d).sum() / max((d * d).sum(), 1e-30))


def find_deltas(weights: dict[str, np.ndarray], parent_dir: Path, quantize,
                log=print) -> tuple[dict[str, Delta], float | None]:
    """Per weight matrix of the fine-tuned graph that differs from the parent's: how to export it, and the mean
    share of the change that rounding the merged weights with `quantize` would keep (None: nothing changed). Empty
    (with the reason logged) when the parent's export does not have the same weights: it is not a fine-tune of it."""
    import onnx
    from onnx import numpy_helper

    parent = {t.name: t for t in onnx.load(str(Path(parent_dir) / "model.onnx"), load_external_data=True).graph
              .initializer if t.name in weights}
    if set(parent) != set(weights) or any(tuple(parent[n].dims) != weights[n].shape for n in weights):
        log("fine-tune delta: the parent's export has other weights (not a fine-tune of it); quantizing the model's "
            "own weights")
        return {}, None
    out: dict[str, Delta] = {}
    kept: list[float] = []
    for name, w in weights.items():
        p = numpy_helper.to_array(parent[name])
        d = w - p
        if float(np.linalg.norm(d)) <= UNCHANGED * max(float(np.linalg.norm(p)), 1e-30):
            continue
        kept.append(kept_share(w, p, quantize))
        factors = low_rank(d)
        if factors is not None:
            out[name] = Delta(parent=p, a=factors[0], b=factors[1])
        elif kept[-1] < KEEP_SHARE:
            out[name] = Delta(parent=p, eight_bit=True)
    if kept:
        ranks = sorted({x.rank for x in out.values() if x.rank})
        log(f"fine-tune delta: {len(kept)} of {len(weights)} weight matrices changed; 4-bit rounding of the merged "
            f"weights would keep {np.mean(kept):.0%} of the change (mean); {sum(x.rank > 0 for x in out.values())} "
            f"kept exactly as low-rank fp32 (rank {', '.join(map(str, ranks)) or '–'}), "
            f"{sum(x.eight_bit for x in out.values())} as 8-bit blocks")
    return out, float(np.mean(kept)) if kept else None
