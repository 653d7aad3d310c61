"""Patterns in an ONNX graph that the affine int4 rewrite (engine/onnx_affine.py) replaces as a whole."""
from __future__ import annotations


def consumers(graph) -> dict[str, list]:
    """Tensor name → the nodes that read it."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def swiglu_tail(graph, readers: dict[str, list], gate_y: str, up_y: str) -> list | None:
    """The builder's SiLU-gated MLP after its gate and up matmuls — Sigmoid(g), Mul(g, s), Mul(that, u) — when
    nothing else reads those tensors; None for any other pattern."""
    outputs = {o.name for o in graph.output}
    users = readers.get(gate_y, [])
    sig = next((n for n in users if n.op_type == "Sigmoid"), None)
    if sig is None or len(users) != 2 or {gate_y, up_y} & outputs:
        return None
    mul = next(n for n in users if n is not sig)
    if mul.op_type != "Mul" or set(mul.input) != {gate_y, sig.output[0]} or readers.get(sig.output[0]) != [mul]:
        return None
    last = readers.get(mul.output[0], [])
    if (len(last) != 1 or last[0].op_type != "Mul" or set(last[0].input) != {mul.output[0], up_y}
            or readers.get(up_y) != [last[0]] or mul.output[0] in outputs):
        return None
    return [sig, mul, last[0]]
