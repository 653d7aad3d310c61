"""Native kernels for ONNX Runtime exports, compiled here from their C++ source with the system's g++.

The C++ sources here build one onnxruntime custom-op library (domain `slmops`; `ort_ops.cc` registers the ops,
`q4_1_matmul.cc` with its tiles `q4_1_tiles.inc` and `q8_0_matmul.cc` compute, `activations.cc` prepares the
inputs and picks the path) with three kinds of op: `Q41MatMul`, a Q4_1 matmul that carries each block's float offset
itself, so an exact Q4_1 export needs one op per weight matrix instead of MatMulNBits plus the offset path,
`Q80MatMul` for the 8-bit LM head — both on activations at about 16 bits (int8 plus its rounding residual as a
second int8 layer), for prompts and decode alike — and `GroupQueryAttention` (`attention.cc`, its op side in
`attention_op.cc`), ONNX Runtime's op of that name computed straight off the KV cache. The library needs an x86-64
CPU with AVX2 and FMA and a C++ compiler; where either is missing, `library()` says why and the quantize job keeps
the portable MatMulNBits graph.

The integer sums have a path per instruction set (PATHS: AVX2, AVX-VNNI, AVX512-VNNI), chosen when the library
loads from what the CPU has, or forced with SLMOPS_KERNEL_PATH=NAME (a path the CPU lacks is not taken: the best one
it has is). Every path returns bit-identical results; `select_path` switches a loaded library (the tests run each).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / name for name in ("activations.cc", "attention.cc", "q4_1_matmul.cc", "q4_1_tiles.inc",
                                    "q4_1_gemm.inc", "gemm.inc", "group_simd.inc", "q8_0_matmul.cc", "q8_0_tiles.inc",
                                    "weights.cc", "ort_ops.cc", "attention_op.cc", "kernels.h", "ort_abi.h",
                                    "ort_kernel.h", "per_isa.inc")]
LIBRARY_NAME = "slmops_q41.so"
DOMAIN = "slmops"
OP_TYPE = "Q41MatMul"
OP_TYPE_Q8 = "Q80MatMul"
OP_TYPE_SWIGLU = "Q41MatMulSwiGLU"  # Q41MatMul over gate | up, then silu(gate)·up
OP_TYPE_ATTENTION = "GroupQueryAttention"  # com.microsoft's op of that name, for the graphs it fits (attention.cc)
PATHS = ("avx2", "avxvnni", "avx512vnni")


class KernelUnavailable(RuntimeError):
    pass


def cpu_flags() -> list[str] | None:
    """This CPU's flags from /proc/cpuinfo (None when it cannot be read)."""
    try:
        return next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")), [])
    except OSError:
        return None


def cpu_supported() -> str | None:
    """None when this CPU can run the kernel, else the reason."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the fused Q4_1 kernel is written for x86-64 (AVX2); this machine is {platform.machine()}"
    flags = cpu_flags()
    if flags is None:
        return "cannot read /proc/cpuinfo to check for AVX2 and FMA"
    missing = [f for f in ("avx2", "fma") if f not in flags]
    return f"this CPU lacks {' and '.join(missing)}" if missing else None


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def library(cache_dir: Path) -> Path:
    """The compiled library (built once per source version into `cache_dir`); KernelUnavailable says why not."""
    reason = cpu_supported()
    if reason:
        raise KernelUnavailable(reason)
    out = Path(cache_dir) / f"q41-{source_hash()}" / LIBRARY_NAME
    if not out.is_file():
        compile_library(HERE, out)
    return out


def compile_library(source_dir: Path, out: Path) -> None:
    """Builds the library from the sources in `source_dir` (this folder, or another version's copy of it) into
    `out`; KernelUnavailable says why not."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler (g++) to build the fused Q4_1 kernel")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / LIBRARY_NAME
        cmd = [compiler, "-O3", "-std=c++17", "-mavx2", "-mfma", "-mf16c", "-fPIC", "-shared", "-fvisibility=hidden",
               "-o", str(partial), *map(str, sorted(Path(source_dir).glob("*.cc")))]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KernelUnavailable(f"cannot run the C++ compiler {compiler}: {exc}") from exc
        if done.returncode != 0:
            raise KernelUnavailable(f"building the fused Q4_1 kernel failed: {done.stderr.strip()[-600:]}")
        partial.replace(out)


@functools.lru_cache(maxsize=None)
def _loaded(lib: Path):
    handle = ctypes.CDLL(str(lib))  # the same file ONNX Runtime loaded: one copy, one selected path
    handle.slmops_kernel_path.restype = ctypes.c_char_p
    handle.slmops_kernel_select.argtypes = [ctypes.c_char_p]
    handle.slmops_kernel_supported.argtypes = [ctypes.c_char_p]
    return handle


@contextlib.contextmanager
def last_position_only(lib: Path | None):
    """Within the block, on this thread: the LM head (Q80MatMul) of an export using library `lib` computes a prompt's
    last position only and leaves the other positions' logits unwritten (whatever their buffer held) — for
    generation, which reads no other (a 512-token prompt's first token ~0.2 s sooner). Scoring, which reads every
    position, must not use it. An older library without the switch, or none (`lib` None), computes every position
    as before."""
    switch = getattr(_loaded(Path(lib)), "slmops_last_position_only", None) if lib is not None else None
    if switch is None:
        yield
        return
    switch(1)
    try:
        yield
    finally:
        switch(0)


def supported_paths(lib: Path) -> list[str]:
    """The kernel paths this CPU can run, by the library's own cpuid check (the one that picks the path)."""
    handle = _loaded(lib)
    return [name for name in PATHS if handle.slmops_kernel_supported(name.encode()) == 1]


def active_path(lib: Path) -> str:
    """The path a loaded (or loadable) kernel library uses in this process."""
    return _loaded(lib).slmops_kernel_path().decode()


def select_path(lib: Path, name: str) -> None:
    """Makes every later call of the library in this process take path `name`; ValueError says why not."""
    code = _loaded(lib).slmops_kernel_select(name.encode())
    if code == -1:
        raise ValueError(f"unknown kernel path {name!r}; the paths are {', '.join(PATHS)}")
    if code == -2:
        raise ValueError(f"this CPU cannot run the {name} path; it can run {', '.join(supported_paths(lib))}")
