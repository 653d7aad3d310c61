"""Native kernels for ONNX Runtime exports, compiled here from their C++ source with the system's g++.

The C++ sources here build one onnxruntime custom-op library (domain `slmops`; `ort_ops.cc` registers the ops,
`q4_1_matmul.cc` and `q8_0_matmul.cc` compute, `activations.cc` prepares the inputs) with two ops: `Q41MatMul`, a
Q4_1 matmul that
carries each block's float offset itself, so an exact Q4_1 export needs one op per weight matrix instead of
MatMulNBits plus the offset path, and `Q80MatMul` for the 8-bit LM head. Both take activations at about 16 bits
(int8 plus its rounding residual as a second int8 layer), for prompts and decode alike. The library
needs an x86-64 CPU with AVX2 and FMA and a C++ compiler; where either is missing, `library()` says why and the
quantize job keeps the portable MatMulNBits graph.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / name for name in ("activations.cc", "q4_1_matmul.cc", "q8_0_matmul.cc", "ort_ops.cc", "kernels.h",
                                    "ort_abi.h")]
LIBRARY_NAME = "slmops_q41.so"
DOMAIN = "slmops"
OP_TYPE = "Q41MatMul"
OP_TYPE_Q8 = "Q80MatMul"


class KernelUnavailable(RuntimeError):
    pass


def cpu_supported() -> str | None:
    """None when this CPU can run the kernel, else the reason."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the fused Q4_1 kernel is written for x86-64 (AVX2); this machine is {platform.machine()}"
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
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
    if out.is_file():
        return out
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler (g++) to build the fused Q4_1 kernel")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / LIBRARY_NAME
        cmd = [compiler, "-O3", "-std=c++17", "-mavx2", "-mfma", "-mf16c", "-fPIC", "-shared", "-fvisibility=hidden",
               "-o", str(partial), *(str(p) for p in SOURCES if p.suffix == ".cc")]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KernelUnavailable(f"cannot run the C++ compiler {compiler}: {exc}") from exc
        if done.returncode != 0:
            raise KernelUnavailable(f"building the fused Q4_1 kernel failed: {done.stderr.strip()[-600:]}")
        partial.replace(out)
    return out
