"""Affine int4 for ONNX Runtime GenAI exports: the quantization that keeps a Q4_1 model's quality and speed.

A Q4_1 block of 32 weights is w = d·q + m (q in 0..15, float d and m). ONNX Runtime's fast MatMulNBits kernel has
only integer zero points (float ones take a ~30× slower path), so it cannot hold m. But for one output column

    x·w = Σ_blocks d·(x_b·(q_b − 8)) + (m + 8d)·Σ x_b

so the fast symmetric MatMulNBits (default zero point 8) does the first part and a tiny fp32 MatMul on the block sums
of x (K/32 values) does the second: exact for weights on a Q4_1 grid, and for any other weights it is Q4_1-style
min/max quantization (llama.cpp's Q4_1), better than symmetric int4 at the same block size.
The embedding table and LM head (Q8_0 in the bundled GGUF: w = d·q, q in −127..127) go to 8-bit MatMulNBits and
GatherBlockQuantized sharing one uint8 table, exact for Q8_0 weights. That is the portable graph (ONNX Runtime ops
only). With the fused kernels (engine/kernels, the default where they can be built) each 4-bit matrix is one
Q41MatMul that carries m itself and the head one Q80MatMul on the same shared table.

The input is the fp32 export of the ONNX Runtime GenAI model builder; this rewrites its MatMul and Gather nodes.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .block_quant import fused_layout, quantize_affine_4bit, quantize_symmetric_8bit, round_affine_4bit

DATA_FILE = "model.onnx.data"
SLOTS_FILE = "adapter_slots.json"  # an export with LoRA inputs: slot → the weight matrices it covers, in order


@dataclass
class AffineReport:
    matmuls: int
    weights: int
    grid_exact_share: float  # share of 4-bit blocks whose weights lie on a d·q + m grid (1.0 for a Q4_1 source)
    max_rel_error: float  # largest |w - ŵ| / block step over all 4-bit blocks
    head_bits: int
    tied_embedding: bool
    low_rank_deltas: int = 0  # matrices whose fine-tune change rides beside the parent's 4-bit weights in fp32
    eight_bit_deltas: int = 0  # matrices stored as 8-bit blocks because 4-bit rounding would erase their change
    rounding_keeps: float | None = None  # share of the fine-tune's change that rounding the merged weights keeps


def check_block_size(widths: list[int], block: int) -> None:
    from .errors import InvalidInput

    if block < 16 or block & (block - 1):
        raise InvalidInput(f"Block size {block} is not supported: use 16, 32, 64, 128 or 256.")
    bad = sorted({w for w in widths if w % block})
    if bad:
        good = [b for b in (16, 32, 64, 128, 256) if all(w % b == 0 for w in widths)]
        raise InvalidInput(f"Block size {block} does not divide the model's widths {', '.join(map(str, bad))}; "
                           f"blocks must tile each weight row exactly. Use one of {good}.")


ATTENTION_ATTRIBUTES = ("num_heads", "kv_num_heads", "scale", "do_rotary", "rotary_interleaved")  # what it reads
ATTENTION_OFF = {"local_window_size": -1, "softcap": 0.0, "smooth_softmax": 0}  # what it lacks: off values


def fits_attention_op(node) -> bool:
    """Whether a com.microsoft.GroupQueryAttention node is one the library's attention (engine/kernels/attention.cc)
    computes: packed QKV, nothing past the rotary caches, no sliding window, softcap or smooth softmax (and, checked
    by the caller, a float32 cache)."""
    from onnx import helper

    if node.op_type != "GroupQueryAttention" or node.domain != "com.microsoft":
        return False
    inputs = list(node.input) + [""] * 9
    if inputs[1] or inputs[2] or any(inputs[9:]) or not all(inputs[i] for i in (0, 3, 4, 5, 6)):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (set(attrs) <= set(ATTENTION_ATTRIBUTES) | set(ATTENTION_OFF)
            and all(attrs.get(name, off) == off for name, off in ATTENTION_OFF.items()))


def rewrite(src_dir: Path, out_dir: Path, block: int = 32, accuracy_level: int = 4, head_bits: int = 8,
            log=print, check_cancelled=lambda: None, fused_library: Path | None = None,
            parent_dir: Path | None = None, adapter_slots: bool = False) -> AffineReport:
    """Read the builder's fp32 export in `src_dir`, write the affine int4 model to `out_dir`.

    With `fused_library` (engine.kernels.library(), block 32 only) each 4-bit weight matrix becomes one Q41MatMul
    node of that custom-op library and an 8-bit head one Q80MatMul; the library is copied into the export and named
    in its genai_config.json. With `parent_dir` (the fp32 export of the model this one was fine-tuned from) each
    matrix the fine-tune changed keeps its change (engine/onnx_delta.py): a low-rank change in fp32 beside the
    parent's 4-bit weights, a full-rank one that 4-bit rounding would erase as 8-bit blocks.

    With `adapter_slots` every 4-bit matrix gets LoRA inputs (engine/onnx_adapters.py): float16 graph inputs
    A [K, r] and B [r, N] whose initializers of the same name are empty (r = 0, the base model) until an adapter
    file supplies them; the slots and the matrices each covers are written to the export's adapter_slots.json."""
    from .kernels import DOMAIN, LIBRARY_NAME, OP_TYPE, OP_TYPE_ATTENTION, OP_TYPE_Q8, OP_TYPE_SWIGLU
    from .onnx_patterns import consumers, swiglu_tail

    if fused_library is not None and block != 32:
        fused_library = None
    import onnx
    from onnx import helper, numpy_helper

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    model = onnx.load(str(src_dir / "model.onnx"), load_external_data=True)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits
               and len(inits[n.input[1]].dims) == 2]
    check_block_size(sorted({int(inits[n.input[1]].dims[0]) for n in matmuls}), block)

    new_nodes: dict[str, list] = {}  # name of a replaced node → nodes that stand in for it
    new_inits: list = []
    drop_inits: set[str] = set()
    block_sums: dict[str, str] = {}  # input tensor → its block sums (shared by q/k/v, gate/up)
    indicator: dict[int, str] = {}
    head_table: dict[str, tuple[str, str]] = {}  # fp32 head weight name → (uint8 table, scales)
    head_4bit: dict[str, np.ndarray] = {}  # fp32 head weights quantized to 4 bits (a tied embedding needs its own)
    errors, exact_blocks, total_blocks, n_weights = [], 0, 0, 0
    low_rank_deltas = eight_bit_deltas = 0

    def block_sum_of(x: str, k: int, prefix: str, nodes: list) -> str:
        if x not in block_sums:
            if k not in indicator:
                ind = np.zeros((k, k // block), np.float32)
                ind[np.arange(k), np.arange(k) // block] = 1.0
                indicator[k] = f"affine.block_indicator.{k}"
                new_inits.append(numpy_helper.from_array(ind, indicator[k]))
            block_sums[x] = f"{prefix}/BlockSums/output_0"
            nodes.append(helper.make_node("MatMul", [x, indicator[k]], [block_sums[x]], name=f"{prefix}/BlockSums"))
        return block_sums[x]

    fused: dict[str, tuple] = {}  # node name → (input, output, weight name, (codes, pair scales, mins)) of a Q41MatMul
    slots: dict[str, dict] = {}  # LoRA slot (prefix of its two input names) → {"k": K, "parts": [[weight, N], …]}

    def slot_inputs(slot: str, k: int, parts: list) -> list[str]:
        slots[slot] = {"k": k, "parts": parts}
        return [f"{slot}.lora_A", f"{slot}.lora_B"]

    def fuse_siblings() -> tuple[int, int]:
        """Q41MatMuls that read the same input (q/k/v, gate/up) become one over their weights side by side and a
        Split: one pass over the input's activations and one kernel call instead of two or three (a decode step
        calls each once per layer, and the small ones cost about as much in dispatch as in reading weights). A
        SiLU-gated MLP's gate/up pair becomes one Q41MatMulSwiGLU instead, whose output is silu(gate)·up (no Split,
        Sigmoid or Muls). Returns the number of calls saved and of gated MLPs joined."""
        readers = consumers(graph)
        groups: dict[str, list[str]] = {}
        for name, (x, *_rest) in fused.items():  # a matrix with a fine-tune's change beside it stays on its own
            groups.setdefault(x if len(new_nodes[name]) == 1 else name, []).append(name)
        saved = gated = 0
        for x, names in groups.items():
            if len(names) == 1:
                _, _, wname, (codes, scales, mins) = fused[names[0]]
                new_inits.extend([numpy_helper.from_array(codes, f"{wname}_Q41"),
                                  numpy_helper.from_array(scales, f"{wname}_scales"),
                                  numpy_helper.from_array(mins, f"{wname}_mins")])
                continue
            tail = None
            if len(names) == 2 and fused[names[0]][3][2].shape == fused[names[1]][3][2].shape:  # gate and up alike
                for order in (names, names[::-1]):  # the gate first: the kernel takes silu of the first half
                    if (tail := swiglu_tail(graph, readers, fused[order[0]][1], fused[order[1]][1])) is not None:
                        names = list(order)
                        break
            first, parts = names[0], [fused[name][3] for name in names]
            base = fused[first][2] + "_siblings"
            new_inits.extend([numpy_helper.from_array(np.concatenate([p[i] for p in parts], axis=axis),
                                                      f"{base}{suffix}")  # mins [nb, N]: side by side on N
                              for i, (suffix, axis) in enumerate((("_Q41", 0), ("_scales", 0), ("_mins", 1)))])
            joined = f"{first}_Q41_siblings/output_0"
            lora = []
            if all(fused[name][2] in slots for name in names):  # one slot for the group, over the same K
                singles = [slots.pop(fused[name][2]) for name in names]
                lora = slot_inputs(base, singles[0]["k"], [single["parts"][0] for single in singles])
            weights = [x, f"{base}_Q41", f"{base}_scales", f"{base}_mins", *lora]
            if tail is not None:
                new_nodes[first] = [helper.make_node(OP_TYPE_SWIGLU, weights, [tail[-1].output[0]],
                                                     name=f"{first}_Q41_swiglu", domain=DOMAIN)]
                for node in tail:
                    new_nodes[node.name] = []
                gated += 1
            else:
                widths = [int(p[2].shape[1]) for p in parts]  # mins [nb, N]
                new_inits.append(numpy_helper.from_array(np.array(widths, np.int64), f"{base}_split"))
                new_nodes[first] = [
                    helper.make_node(OP_TYPE, weights, [joined], name=f"{first}_Q41_siblings", domain=DOMAIN),
                    helper.make_node("Split", [joined, f"{base}_split"], [fused[name][1] for name in names],
                                     name=f"{first}_Q41_siblings/Split", axis=-1)]
            for name in names[1:]:
                new_nodes[name] = []
            saved += len(names) - 1
        return saved, gated

    deltas, rounding_keeps = {}, None
    if parent_dir is not None and adapter_slots:
        raise ValueError("an export takes either a fine-tune's change (parent_dir) or adapter slots, not both")
    if parent_dir is not None:
        from .onnx_delta import find_deltas

        weights = {n.input[1]: numpy_helper.to_array(inits[n.input[1]]) for n in matmuls}
        deltas, rounding_keeps = find_deltas(weights, parent_dir, lambda w: round_affine_4bit(w, block), log)

    def eight_bit(x: str, w: np.ndarray, wname: str, y: str, name: str) -> list:
        q8, d8 = quantize_symmetric_8bit(w.T, block)
        qn, sn = f"{wname}_Q8", f"{wname}_scales"
        new_inits.extend([numpy_helper.from_array(q8, qn), numpy_helper.from_array(d8.reshape(-1), sn)])
        head_table[wname] = (qn, sn)
        if fused_library is not None:  # the fused library's Q8_0 kernel (~16-bit activations)
            return [helper.make_node(OP_TYPE_Q8, [x, qn, sn], [y], name=f"{name}_Q80", domain=DOMAIN)]
        k, n = w.shape
        return [helper.make_node("MatMulNBits", [x, qn, sn], [y], name=f"{name}_Q8", domain="com.microsoft", K=k,
                                 N=n, bits=8, block_size=block, accuracy_level=accuracy_level)]

    def four_bit(x: str, w: np.ndarray, wname: str, y: str, name: str, prefix: str, slot: bool = False) -> list:
        nonlocal exact_blocks, total_blocks
        k, n = w.shape
        packed, d, m, err = quantize_affine_4bit(w.T, block)
        errors.append(float(err.max()))
        exact_blocks += int((err < 1e-3).sum())
        total_blocks += err.size
        lora = slot_inputs(wname, k, [[wname, n]]) if slot else []
        if fused_library is not None and n % 2 == 0:  # initializers written by fuse_siblings (below)
            fused[name] = (x, y, wname, fused_layout(packed, d, m))
            return [helper.make_node(OP_TYPE, [x, f"{wname}_Q41", f"{wname}_scales", f"{wname}_mins", *lora], [y],
                                     name=f"{name}_Q41", domain=DOMAIN)]
        if lora:  # the portable graph: the adapter's float16 factors cast to float, then ONNX Runtime MatMuls
            y_base = f"{name}/Base/output_0"
            casts = [helper.make_node("Cast", [f], [f"{f}/float"], name=f"{f}/Cast", to=onnx.TensorProto.FLOAT)
                     for f in lora]
            return (four_bit_portable(x, k, n, packed, d, m, wname, y_base, name, prefix) + casts
                    + low_rank_branch(x, *(f"{f}/float" for f in lora), y_base, y, name))
        return four_bit_portable(x, k, n, packed, d, m, wname, y, name, prefix)

    def four_bit_portable(x, k, n, packed, d, m, wname, y, name, prefix) -> list:
        qn, sn, cn = f"{wname}_Q4", f"{wname}_scales", f"{wname}_offsets"
        new_inits.extend([numpy_helper.from_array(packed, qn), numpy_helper.from_array(d.reshape(-1), sn),
                          numpy_helper.from_array(np.ascontiguousarray((m + 8.0 * d).T), cn)])
        nodes: list = []
        sums = block_sum_of(x, k, prefix + "/" + name.rsplit("/", 1)[-1], nodes)
        y0, corr = f"{name}_Q4/output_0", f"{name}/Offsets/output_0"
        return nodes + [helper.make_node("MatMulNBits", [x, qn, sn], [y0], name=f"{name}_Q4", domain="com.microsoft",
                                         K=k, N=n, bits=4, block_size=block, accuracy_level=accuracy_level),
                        helper.make_node("MatMul", [sums, cn], [corr], name=f"{name}/Offsets"),
                        helper.make_node("Add", [y0, corr], [y], name=f"{name}/AddOffsets")]

    def low_rank(x: str, delta, wname: str, y_base: str, y: str, name: str) -> list:
        """y = y_base + (x·A)·B: a fine-tune's low-rank update beside the parent's quantized weights, in fp32."""
        an, bn = f"{wname}_delta_A", f"{wname}_delta_B"
        new_inits.extend([numpy_helper.from_array(delta.a, an), numpy_helper.from_array(delta.b, bn)])
        return low_rank_branch(x, an, bn, y_base, y, name)

    def low_rank_branch(x: str, an: str, bn: str, y_base: str, y: str, name: str) -> list:
        xa, xab = f"{name}/DeltaA/output_0", f"{name}/DeltaB/output_0"
        return [helper.make_node("MatMul", [x, an], [xa], name=f"{name}/DeltaA"),
                helper.make_node("MatMul", [xa, bn], [xab], name=f"{name}/DeltaB"),
                helper.make_node("Add", [y_base, xab], [y], name=f"{name}/AddDelta")]

    for i, node in enumerate(matmuls):
        check_cancelled()
        wname, x, y = node.input[1], node.input[0], node.output[0]
        w = numpy_helper.to_array(inits[wname])  # [K, N]
        k, n = w.shape
        n_weights += w.size
        prefix = node.name.rsplit("/", 1)[0] if "/" in node.name else node.name
        is_head = "lm_head" in node.name or n == max(int(inits[m.input[1]].dims[1]) for m in matmuls) and n > 8 * k
        delta = deltas.get(wname)
        if is_head and head_bits == 8:
            nodes = eight_bit(x, w, wname, y, node.name)
        elif delta is not None and delta.eight_bit:
            nodes = eight_bit(x, w, wname, y, node.name)
            eight_bit_deltas += 1
        elif delta is not None:
            y_base = f"{node.name}/Parent/output_0"
            nodes = four_bit(x, delta.parent, wname, y_base, node.name, prefix)
            nodes += low_rank(x, delta, wname, y_base, y, node.name)
            low_rank_deltas += 1
        else:
            if is_head:
                head_4bit[wname] = w
            nodes = four_bit(x, w, wname, y, node.name, prefix, slot=adapter_slots and not is_head)
        drop_inits.add(wname)
        new_nodes[node.name] = nodes
        if (i + 1) % 20 == 0:
            log(f"quantized {i + 1}/{len(matmuls)} weight matrices")
    if fused:
        saved, gated = fuse_siblings()
        if saved:
            log(f"fused kernel: matrices that read the same input share one call ({saved} calls fewer per step)")
        if gated:
            log(f"fused kernel: {gated} SiLU-gated MLPs take silu(gate)·up in the same call (Q41MatMulSwiGLU)")
    float_cache = all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in graph.input
                      if i.name.startswith("past_key_values."))
    if fused_library is not None and float_cache:
        attention = [n for n in graph.node if fits_attention_op(n)]
        for node in attention:
            new_nodes[node.name] = [helper.make_node(OP_TYPE_ATTENTION, list(node.input[:9]), list(node.output),
                                                     name=node.name, domain=DOMAIN, **{
                a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in ATTENTION_ATTRIBUTES})]
        if attention:
            log(f"attention: {len(attention)} GroupQueryAttention nodes run the library's own (its cost no longer "
                "grows with each step's copies of the cache)")

    # The token embedding: a Gather from the (transposed) head weight when tied, or from its own table.
    tied = False
    for node in graph.node:
        if node.op_type != "Gather" or node.input[1] != "input_ids":
            continue
        table, replaced = node.input[0], [node.name]
        source = producers.get(table)
        if source is not None and source.op_type == "Transpose" and source.input[0] in head_table:
            qn, sn = head_table[source.input[0]]
            tied = True
            replaced.append(source.name)
        elif table in inits or (source is not None and source.op_type == "Transpose"
                                and source.input[0] in head_4bit):
            if table in inits:
                values = numpy_helper.to_array(inits[table])
                drop_inits.add(table)
            else:
                values = head_4bit[source.input[0]].T
                replaced.append(source.name)
            q8, d8 = quantize_symmetric_8bit(values, block)
            qn, sn = f"{table}_Q8", f"{table}_scales"
            new_inits += [numpy_helper.from_array(q8, qn), numpy_helper.from_array(d8, sn)]
        else:
            continue
        flat = f"{qn}/flat"
        shape_name = f"{qn}/flat_shape"
        new_inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), shape_name))
        scales2d = f"{sn}/2d"
        scales_shape = f"{sn}/shape2d"
        rows = int(next(t for t in new_inits if t.name == qn).dims[0])
        new_inits.append(numpy_helper.from_array(np.array([rows, -1], np.int64), scales_shape))
        new_nodes[node.name] = [
            helper.make_node("Reshape", [qn, shape_name], [flat], name=f"{node.name}/FlatTable"),
            helper.make_node("Reshape", [sn, scales_shape], [scales2d], name=f"{node.name}/Scales2d"),
            helper.make_node("GatherBlockQuantized", [flat, "input_ids", scales2d], [node.output[0]],
                             name=f"{node.name}_Q8", domain="com.microsoft", bits=8, block_size=block,
                             gather_axis=0, quantize_axis=1)]
        for name in replaced[1:]:
            new_nodes[name] = []

    nodes_out = []
    for node in graph.node:
        nodes_out.extend(new_nodes.get(node.name, [node]))
    del graph.node[:]
    graph.node.extend(nodes_out)
    kept = [t for t in graph.initializer if t.name not in drop_inits]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    for slot, layout in slots.items():  # optional inputs: an initializer of the same name is the default (empty)
        k, n = layout["k"], sum(width for _, width in layout["parts"])
        rank = f"{slot}.r"  # each slot its own: an adapter's ranks differ from slot to slot (0 where it has none)
        for suffix, shape, dims in ((".lora_A", (k, 0), [k, rank]), (".lora_B", (0, n), [rank, n])):
            graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float16), slot + suffix))
            graph.input.append(helper.make_tensor_value_info(slot + suffix, onnx.TensorProto.FLOAT16, dims))
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if fused_library is not None:
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src_dir.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx"):
            shutil.copy2(f, tmp / f.name)
    if slots:
        (tmp / SLOTS_FILE).write_text(json.dumps(slots, indent=1), encoding="utf-8")
    if fused_library is not None:
        shutil.copy2(fused_library, tmp / LIBRARY_NAME)
        config_path = tmp / "genai_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["model"]["decoder"].setdefault("session_options", {})["custom_ops_library"] = LIBRARY_NAME
        config_path.write_text(json.dumps(config, indent=4), encoding="utf-8")
    log("writing the quantized graph")
    onnx.save_model(model, str(tmp / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return AffineReport(matmuls=len(matmuls), weights=n_weights,
                        grid_exact_share=exact_blocks / max(total_blocks, 1),
                        max_rel_error=max(errors) if errors else 0.0, head_bits=head_bits, tied_embedding=tied,
                        low_rank_deltas=low_rank_deltas, eight_bit_deltas=eight_bit_deltas,
                        rounding_keeps=rounding_keeps)
