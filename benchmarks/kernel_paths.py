"""The fused kernels' instruction-set paths, one thread, on the bundled model's matrix shapes: milliseconds and
GOP/s per path (2·rows·N·K operations), and whether every path gives the AVX2 path's exact bits.

    python benchmarks/kernel_paths.py [--rows 1 32 512]

Calls the library through ctypes with no thread pool (serially), so the figures are per core. Rows of 32 or
more take the prompt GEMMs (Q4_1: integer; Q8_0: float); fewer take the integer tiles. The weights are packed once
beforehand (slmops_q41_pack, slmops_q80_pack), as the custom ops pack an export's constant weights.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.kernels import library, select_path, supported_paths  # noqa: E402
from engine.block_quant import fused_layout, quantize_affine_4bit, quantize_symmetric_8bit  # noqa: E402

P = ctypes.c_void_p
SHAPES = {"Q41": [(576, 960), (576, 576), (576, 3072), (1536, 576)], "Q80": [(576, 49152)]}  # (K, N)


def packed_weights(lib, op: str, n: int, k: int, *weights: np.ndarray) -> np.ndarray:
    """The weights packed once (slmops_q41_pack / slmops_q80_pack), as the custom ops pack an export's constant
    weights when the session is created."""
    size = getattr(lib, f"slmops_{op}_packed_bytes")
    size.restype = ctypes.c_size_t
    packed = np.zeros(size(ctypes.c_int64(n), ctypes.c_int64(k)), np.uint8)
    getattr(lib, f"slmops_{op}_pack")(*(w.ctypes.data_as(P) for w in weights), ctypes.c_int64(n), ctypes.c_int64(k),
                                       packed.ctypes.data_as(P))
    return packed


def timed(call, work: float) -> float:
    call()
    reps = max(3, int(2e9 / work))
    t0 = time.perf_counter()
    for _ in range(reps):
        call()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 32, 512])
    args = ap.parse_args()
    path = library(Path(tempfile.mkdtemp()))
    lib = ctypes.CDLL(str(path))
    rng = np.random.default_rng(0)
    paths = supported_paths(path)
    print(f"paths this CPU runs: {', '.join(paths)}")
    print(f"{'op':4s} {'rows':>5s} {'K':>5s} {'N':>6s} " + " ".join(f"{p + ' ms':>15s}" for p in paths)
          + "  identical")
    for op, shapes in SHAPES.items():
        for k, n in shapes:
            w = rng.normal(0, 0.05, (n, k)).astype(np.float32)
            if op == "Q41":
                codes, scales, mins = fused_layout(*quantize_affine_4bit(w, 32)[:3])
                args_w = [packed_weights(lib, "q41", n, k, codes, scales, mins)]
                fn = lib.slmops_q41_matmul_packed
            else:
                table, d = quantize_symmetric_8bit(w, 32)
                args_w = [packed_weights(lib, "q80", n, k, np.ascontiguousarray(table),
                                         np.ascontiguousarray(d.reshape(-1).astype(np.float32)))]
                fn = lib.slmops_q80_matmul_packed
            for rows in args.rows:
                x = rng.normal(0, 1, (rows, k)).astype(np.float32)
                y = np.zeros((rows, n), np.float32)
                call = functools.partial(fn, x.ctypes.data_as(P), *(a.ctypes.data_as(P) for a in args_w),
                                         y.ctypes.data_as(P), ctypes.c_int64(rows), ctypes.c_int64(n),
                                         ctypes.c_int64(k), None, None)

                cells, outputs = [], []
                for name in paths:
                    select_path(path, name)
                    seconds = timed(call, rows * n * k)
                    outputs.append(y.copy())
                    cells.append(f"{seconds * 1e3:7.3f} ({2 * rows * n * k / seconds / 1e9:5.1f})")
                same = all(np.array_equal(outputs[0], o) for o in outputs)
                print(f"{op:4s} {rows:5d} {k:5d} {n:6d} " + " ".join(f"{c:>15s}" for c in cells) + f"  {same}")
    print("cells: ms per call (GOP/s)")


if __name__ == "__main__":
    main()
