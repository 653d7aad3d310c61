"""Block quantization of weight matrices in numpy: Q4_1-style affine int4 (w = d·q + m per block, min/max rounding),
symmetric 8-bit (w = d·q), and the fused kernel's layout of the int4 codes. The ONNX rewrite (engine/onnx_affine.py),
the calibrated fit (engine/int4_fit.py), the kernel tests and benchmarks use them."""
from __future__ import annotations

import numpy as np


def affine_codes(w_t: np.ndarray, block: int):
    """w_t [N, K] → min/max Q4_1 rounding per block: (blocks [N, K/block, block], codes, d, m)."""
    n, k = w_t.shape
    b = w_t.reshape(n, k // block, block).astype(np.float32)
    lo, hi = b.min(axis=2), b.max(axis=2)
    d = (hi - lo) / 15.0
    safe = np.where(d > 0, d, 1.0)
    q = np.clip(np.rint((b - lo[..., None]) / safe[..., None]), 0, 15).astype(np.uint8)
    return b, q, d, lo


def step_errors(b, q, d, lo) -> np.ndarray:
    """affine_codes' result → each block's largest |w − ŵ| in steps (≈ 0 for a block on a d·q + m grid)."""
    return np.abs(q * d[..., None] + lo[..., None] - b).max(axis=2) / np.where(d > 0, d, 1.0)


def quantize_affine_4bit(w_t: np.ndarray, block: int):
    """w_t [N, K] → (packed uint8 [N, K/block, block/2], d [N, K/block], m [N, K/block], error/step per block)."""
    b, q, d, lo = affine_codes(w_t, block)
    err = step_errors(b, q, d, lo)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return packed, d.astype(np.float32), lo.astype(np.float32), err


def round_affine_4bit(w: np.ndarray, block: int) -> np.ndarray:
    """w [K, N] as the affine int4 export holds it (dequantized), for measuring what rounding keeps."""
    _, q, d, lo = affine_codes(w.T, block)
    return (q * d[..., None] + lo[..., None]).reshape(w.shape[1], w.shape[0]).T


def fused_layout(packed: np.ndarray, d: np.ndarray, m: np.ndarray):
    """quantize_affine_4bit's [N, nb, 16] codes, [N, nb] scales and [N, nb] mins → the fused kernel's layout:
    codes by column pairs [N/2, nb, 32] (per block 16 bytes of column 2p, then 16 of 2p+1; byte j holds elements
    j and j+16), float16 scales [N/2, nb, 2] and float16 mins block by block [nb, N]."""
    n, nb, half = packed.shape
    q = np.empty((n, nb, half * 2), np.uint8)
    q[..., 0::2], q[..., 1::2] = packed & 0x0F, packed >> 4
    codes = (q[..., :half] | (q[..., half:] << 4)).reshape(n // 2, 2, nb, half).transpose(0, 2, 1, 3)
    scales = d.reshape(n // 2, 2, nb).transpose(0, 2, 1)
    return (np.ascontiguousarray(codes.reshape(n // 2, nb, 2 * half)), np.ascontiguousarray(scales, np.float16),
            np.ascontiguousarray(m.reshape(n, nb).T, np.float16))


def quantize_symmetric_8bit(w_t: np.ndarray, block: int):
    """w_t [N, K] → (uint8 [N, K/block, block] holding q + 128, d [N, K/block]) with q = round(w / d) in ±127."""
    n, k = w_t.shape
    b = w_t.reshape(n, k // block, block).astype(np.float32)
    d = np.abs(b).max(axis=2) / 127.0
    safe = np.where(d > 0, d, 1.0)
    q = np.clip(np.rint(b / safe[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), d.astype(np.float32)
