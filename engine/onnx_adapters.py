"""LoRA adapters over one ONNX export: the base is exported once with adapter slots, each adapter becomes a small
ONNX Runtime adapter file (`onnxruntime.AdapterFormat`, loaded by onnxruntime-genai's `og.Adapters`).

The base's int4 export (engine/onnx_affine.py, `adapter_slots=True`) gives every 4-bit weight matrix two optional
float16 graph inputs, `<slot>.lora_A` [K, r] and `<slot>.lora_B` [r, N], whose same-named initializers are empty
(r = 0): with no adapter active the model is the base. The fused kernel adds (x·A)·B inside its Q41MatMul call (sums
in fp32); the portable graph casts the factors to float and adds two MatMuls. A slot covers the matrices that one
kernel call computes side by side (q/k/v packed by the builder, gate/up joined by the affine rewrite): their factors
go side by side in A and block-diagonal in B.

An adapter's factors come from its change to the base's weights, found in the builder's fp32 export of the merged
adapter next to the base's (matched by initializer name, as for a fine-tune's int4 export in engine/onnx_delta.py),
so whatever the builder packs or renames, the adapter file matches the graph it was exported for.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import InvalidInput
from .onnx_affine import SLOTS_FILE
from .onnx_delta import MAX_RANK, UNCHANGED, low_rank

ADAPTERS_DIR = "adapters"  # in the export folder: <name>.onnx_adapter per adapter
ADAPTER_SUFFIX = ".onnx_adapter"


def read_slots(export_dir: Path) -> dict:
    path = Path(export_dir) / SLOTS_FILE
    if not path.is_file():
        raise InvalidInput(f"{export_dir} was exported without adapter slots; export its base with adapters to add "
                           "one")
    return json.loads(path.read_text(encoding="utf-8"))


def matmul_weights(export_dir: Path) -> dict[str, np.ndarray]:
    """The 2-D weights of a builder export's MatMul nodes, by initializer name ([K, N])."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(Path(export_dir) / "model.onnx"), load_external_data=True)
    inits = {t.name: t for t in model.graph.initializer}
    names = {n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}
    return {name: numpy_helper.to_array(inits[name]) for name in names if len(inits[name].dims) == 2}


def adapter_factors(merged: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Per weight matrix the adapter changed: (A [K, r], B [r, N]) with A·B = merged − base. InvalidInput when the
    two exports are not of one architecture or a change is not low-rank (not a LoRA adapter, or r > MAX_RANK)."""
    if set(merged) != set(base) or any(merged[n].shape != base[n].shape for n in base):
        raise InvalidInput("the adapter's merged export has other weights than the base's: the adapter was not "
                           "trained on this base")
    out = {}
    for name, w in merged.items():
        d = w - base[name]
        if float(np.linalg.norm(d)) <= UNCHANGED * max(float(np.linalg.norm(base[name])), 1e-30):
            continue
        factors = low_rank(d)
        if factors is None:
            raise InvalidInput(f"the adapter's change to {name} is not of low rank (≤ {MAX_RANK}): an ONNX adapter "
                               "holds LoRA factors only; export the merged model instead")
        out[name] = factors
    return out


def slot_parameters(slots: dict, factors: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The adapter file's tensors: for each slot with a changed matrix, A [K, Σr] and block-diagonal B [Σr, ΣN]."""
    covered = {weight for layout in slots.values() for weight, _ in layout["parts"]}
    missing = sorted(set(factors) - covered)
    if missing:
        raise InvalidInput(f"the adapter changes {', '.join(missing)}, which the export has no adapter slot for "
                           "(LoRA on the embedding or the LM head): train the adapter without those target modules")
    params = {}  # float16: half the bytes each decode step reads (the kernel sums in fp32)
    for slot, layout in slots.items():
        parts = [(weight, width, factors.get(weight)) for weight, width in layout["parts"]]
        if not any(f is not None for _, _, f in parts):
            continue
        rank = sum(f[0].shape[1] for _, _, f in parts if f is not None)
        a = np.zeros((layout["k"], rank), np.float32)
        b = np.zeros((rank, sum(width for _, width, _ in parts)), np.float32)
        row = col = 0
        for _, width, f in parts:
            if f is not None:
                r = f[0].shape[1]
                a[:, row:row + r], b[row:row + r, col:col + width] = f
                row += r
            col += width
        params[f"{slot}.lora_A"], params[f"{slot}.lora_B"] = a.astype(np.float16), b.astype(np.float16)
    return params


def write_adapter(path: Path, params: dict[str, np.ndarray]) -> int:
    """Write an ONNX Runtime adapter file (written beside, then renamed); returns its size in bytes."""
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for name, v in params.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    fmt.export_adapter(str(tmp))
    tmp.replace(path)
    return path.stat().st_size


def convert(export_dir: Path, base_fp32: Path, merged_fp32: Path, name: str, log=print,
            out_dir: Path | None = None) -> Path:
    """One adapter (its merged fp32 export next to the base's fp32 export) → `<out_dir>/<name>.onnx_adapter`
    (default out_dir: the export's adapters folder)."""
    slots = read_slots(export_dir)
    factors = adapter_factors(matmul_weights(merged_fp32), matmul_weights(base_fp32))
    if not factors:
        raise InvalidInput(f"adapter '{name}' does not change the base's weights (an untrained adapter?)")
    params = slot_parameters(slots, factors)
    path = Path(out_dir or Path(export_dir) / ADAPTERS_DIR) / f"{name}{ADAPTER_SUFFIX}"
    size = write_adapter(path, params)
    ranks = sorted({int(v.shape[1]) for k, v in params.items() if k.endswith(".lora_A")})
    log(f"adapter '{name}': {len(factors)} matrices in {len(params) // 2} slots (rank {', '.join(map(str, ranks))}), "
        f"{size / 1e6:.2f} MB")
    return path


def adapter_names(export_dir: Path) -> list[str]:
    folder = Path(export_dir) / ADAPTERS_DIR
    return sorted(p.name[:-len(ADAPTER_SUFFIX)] for p in folder.glob(f"*{ADAPTER_SUFFIX}")) if folder.is_dir() else []
