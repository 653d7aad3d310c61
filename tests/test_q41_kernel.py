"""The fused kernels (engine/kernels): built with g++, loaded by onnxruntime as a custom-op library, and checked
against numpy — to float rounding of their integer arithmetic, and against exact float math within half a step of
their activation rounding (int8 for one row, int8 plus residual for prompts)."""
import numpy as np
import pytest

from engine.kernels import (DOMAIN, OP_TYPE, OP_TYPE_ATTENTION, OP_TYPE_Q8, OP_TYPE_SWIGLU, PATHS, KernelUnavailable,
                            active_path, cpu_supported, library, select_path, supported_paths)
from engine.block_quant import fused_layout, quantize_affine_4bit, quantize_symmetric_8bit

pytestmark = pytest.mark.skipif(cpu_supported() is not None, reason=f"{cpu_supported()}")


def q4_1_weights(rng, n, k):
    """[N, K] weights exactly on a Q4_1 grid (each block holds its q = 0 and q = 15, so min/max find d and m)."""
    q = rng.integers(0, 16, (n, k // 32, 32))
    q[..., 0], q[..., 1] = 0, 15
    d = rng.uniform(0.002, 0.02, (n, k // 32, 1)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.15, 0.0, (n, k // 32, 1)).astype(np.float16).astype(np.float32)
    return (q * d + m).reshape(n, k).astype(np.float32)


def op_session(lib, op_type, initializers: dict, shape, fed: bool = False):
    """An onnxruntime session of one `op_type` node y = op(x, *initializers) from the kernel library; fed=True makes
    the weights graph inputs instead (given at each run, so the kernel cannot copy them when it is created)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node(op_type, ["x", *initializers], ["y"], domain=DOMAIN)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if fed:
        inputs += [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                   for name, v in initializers.items()]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [] if fed else [numpy_helper.from_array(v, name) for name, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # the kernels split their columns over ONNX Runtime's thread pool
    options.register_custom_ops_library(str(lib))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def session(lib, w, shape):
    """Q41MatMul over the Q4_1 weights w [N, K]."""
    packed, d, m, err = quantize_affine_4bit(w, 32)
    assert err.max() < 1e-3  # the weights are on the grid: the export holds them exactly
    codes, scales, mins = fused_layout(packed, d, m)
    return op_session(lib, OP_TYPE, {"B": codes, "d": scales, "m": mins}, shape)


def kernel_activations(x, residual: bool = True):
    """x as the kernels see it, per block of 32: int8 at scale max|x|/127 plus the rounding residual as a second
    int8 layer at 1/254 of that step (residual=False: the int8 layer alone, for comparison)."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    blocks = rows.reshape(rows.shape[0], -1, 32)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.rint(blocks / safe) * scale
    if residual:
        fine = scale / 254.0
        q = q + np.clip(np.rint((blocks - q) / np.where(fine > 0, fine, 1.0)), -127, 127) * fine
        scale = fine
    return q, blocks, scale


def kernel_reference(x, w, residual: bool = True):
    """What Q41MatMul computes: the d·q part on kernel_activations(x), the offsets m on exact block sums."""
    xq, blocks, _ = kernel_activations(x, residual)
    n, k = w.shape
    wb = w.reshape(n, k // 32, 32).astype(np.float64)
    lo = wb.min(axis=2, keepdims=True)
    body = np.einsum("rbi,nbi->rn", xq, wb - lo)
    offsets = np.einsum("rb,nb->rn", blocks.sum(axis=2), lo[..., 0])
    return (body + offsets).reshape(*x.shape[:-1], n)


def rounding_bound(x, w):
    """|kernel − exact| ≤ Σ |w|·(half a step of x's last int8 layer)."""
    _, blocks, scale = kernel_activations(x)
    half_step = np.repeat(scale[..., 0] / 2.0, 32, axis=1)  # [rows, K]
    return (half_step @ np.abs(w.T).astype(np.float64)).reshape(*x.shape[:-1], w.shape[0])


@pytest.fixture(params=PATHS)
def kernel_path(request, kernel_lib):
    """Each instruction-set path of the kernels that this CPU runs (the others are skipped, named)."""
    if request.param not in supported_paths(kernel_lib):
        pytest.skip(f"this CPU cannot run the {request.param} path")
    before = active_path(kernel_lib)
    select_path(kernel_lib, request.param)
    yield request.param
    select_path(kernel_lib, before)


# rows 1 (decode), 7, 18 and 19 (tiles of 2, 4 and 8 rows plus leftovers), column counts that fill their last group
# of 16 or not; from 32 rows the integer GEMM of q4_1_gemm.inc (panels of 16 or 32 columns, rows in threes or sixes
# plus leftovers; the last N % 32 columns by the tiles)
@pytest.mark.parametrize("shape,n", [((1, 1, 576), 576), ((1, 1, 576), 1536), ((1, 1, 1536), 576),
                                     ((1, 7, 64), 64), ((2, 3, 96), 6), ((1, 1, 64), 2), ((1, 19, 96), 10),
                                     ((2, 9, 64), 68), ((1, 37, 64), 70), ((2, 20, 96), 64), ((1, 45, 64), 30)])
def test_fused_kernel_matches_numpy(kernel_lib, kernel_path, shape, n):
    rng = np.random.default_rng(n + shape[-1])
    w = q4_1_weights(rng, n, shape[-1])
    x = rng.standard_normal(shape).astype(np.float32)
    y = session(kernel_lib, w, list(shape)).run(None, {"x": x})[0]
    assert y.shape == (*shape[:-1], n)
    assert active_path(kernel_lib) == kernel_path
    if kernel_path != "avx2":  # the same integer sums in the same order: bit-identical to the AVX2 path
        select_path(kernel_lib, "avx2")
        np.testing.assert_array_equal(y, session(kernel_lib, w, list(shape)).run(None, {"x": x})[0])
    # the kernel's own arithmetic: integer products summed exactly, float scales — agrees to float rounding
    ref = kernel_reference(x, w)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # against exact float math the only error is the rounding of x: at most half a step per element
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    assert (np.abs(y - exact) <= rounding_bound(x, w) * 1.001 + 1e-5).all()
    # the residual layer brings the result far closer than int8 activations alone (decode and prompts alike)
    int8_only = kernel_reference(x, w, residual=False)
    assert np.abs(y - exact).max() < 0.05 * np.abs(int8_only - exact).max()


def session_of(lib, op_type, w, shape):
    packed, d, m, _ = quantize_affine_4bit(w, 32)
    codes, scales, mins = fused_layout(packed, d, m)
    return op_session(lib, op_type, {"B": codes, "d": scales, "m": mins}, shape)


@pytest.mark.parametrize("shape,half", [((1, 1, 576), 1536), ((1, 5, 64), 36), ((2, 20, 96), 64), ((1, 1, 64), 3)])
def test_swiglu_op_is_silu_of_the_gate_half_times_the_up_half(kernel_lib, shape, half):
    """Q41MatMulSwiGLU over [gate | up] weights: what Q41MatMul gives for both, joined as silu(gate)·up (the
    builder's Sigmoid, Mul, Mul), to float rounding of the exponential; rows alone or many (a prompt)."""
    rng = np.random.default_rng(half)
    w = q4_1_weights(rng, 2 * half, shape[-1])
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    both = session_of(kernel_lib, OP_TYPE, w, list(shape)).run(None, {"x": x})[0].astype(np.float64)
    gate, up = both[..., :half], both[..., half:]
    y = session_of(kernel_lib, OP_TYPE_SWIGLU, w, list(shape)).run(None, {"x": x})[0]
    assert y.shape == (*shape[:-1], half)
    np.testing.assert_allclose(y, gate / (1 + np.exp(-gate)) * up, rtol=2e-6, atol=1e-6 * np.abs(both).max() ** 2)


@pytest.mark.parametrize("rows", [23, 40])
def test_a_rows_result_does_not_depend_on_the_other_rows_of_its_call(kernel_lib, kernel_path, rows):
    """23 rows go through the integer tiles (the path's widest tile, then tiles of four and two, then single rows: 8,
    8, 4, 2 and 1 on the AVX512-VNNI path) and the offsets (eight rows at a time, then single rows); 40 rows through
    the prompt GEMM, its last 6 columns (a partial group of 16) through the tiles. Every row's bits equal its own
    one-row call, so a sequence decoded in a batch of any size, or a prompt's last position, gets what it gets
    alone."""
    rng = np.random.default_rng(5)
    k, n = 576, 1536 + 70
    w = q4_1_weights(rng, n, k)
    x = rng.standard_normal((1, rows, k)).astype(np.float32)
    together = session(kernel_lib, w, [1, rows, k]).run(None, {"x": x})[0][0]
    alone = session(kernel_lib, w, [1, 1, k])
    for r in range(rows):
        np.testing.assert_array_equal(together[r], alone.run(None, {"x": x[:, r:r + 1]})[0][0, 0])


@pytest.mark.parametrize("op_type,rows", [(OP_TYPE, 1), (OP_TYPE, 40), (OP_TYPE_SWIGLU, 1), (OP_TYPE_Q8, 1),
                                          (OP_TYPE_Q8, 40)])
def test_weights_given_at_run_time_give_the_bits_of_constant_ones(kernel_lib, op_type, rows):
    """Constant weights are copied into 2 MiB pages when the kernel is created (ort_ops.cc, weights.cc); weights that
    come as graph inputs are read where they are. Both give the same bits, in decode (one row) and the prompt GEMM."""
    rng = np.random.default_rng(rows)
    k, n = 576, 1536
    w = q4_1_weights(rng, n, k)
    if op_type == OP_TYPE_Q8:
        table, d = quantize_symmetric_8bit(w, 32)
        weights = {"table": table, "scales": d.reshape(-1)}
    else:
        packed, d, m, _ = quantize_affine_4bit(w, 32)
        weights = dict(zip(("B", "d", "m"), fused_layout(packed, d, m)))
    x = rng.standard_normal((1, rows, k)).astype(np.float32)
    constant = op_session(kernel_lib, op_type, weights, [1, rows, k]).run(None, {"x": x})[0]
    fed = op_session(kernel_lib, op_type, weights, [1, rows, k], fed=True)
    for _ in range(2):  # and again: nothing of the first run's inputs is kept
        np.testing.assert_array_equal(fed.run(None, {"x": x, **weights})[0], constant)
    np.testing.assert_array_equal(fed.run(None, {"x": x, **{name: np.zeros_like(v) for name, v in weights.items()}})[0],
                                  np.zeros_like(constant))


@pytest.mark.parametrize("shape,n,rank", [((1, 1, 64), 96, 8), ((1, 9, 64), 66, 4), ((2, 20, 96), 64, 24),
                                          ((1, 3, 64), 32, 0)])
def test_fused_kernel_adds_a_lora_adapter_from_its_optional_inputs(kernel_lib, shape, n, rank):
    """Q41MatMul(x, …, A [K, r], B [r, N]) = Q41MatMul(x, …) + (x·A)·B (float16 factors, fp32 sums); r = 0 (the
    default of an export with adapter inputs and no adapter active) adds nothing; factors that do not fit are
    refused with the shapes named."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(rank + n)
    k = shape[-1]
    w = q4_1_weights(rng, n, k)
    packed, d, m, _ = quantize_affine_4bit(w, 32)
    codes, scales, mins = fused_layout(packed, d, m)
    weights = [numpy_helper.from_array(v, name) for name, v in {"B": codes, "d": scales, "m": mins}.items()]
    node = helper.make_node(OP_TYPE, ["x", "B", "d", "m", "lora_A", "lora_B"], ["y"], domain=DOMAIN)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
              helper.make_tensor_value_info("lora_A", TensorProto.FLOAT16, [k, "ra"]),
              helper.make_tensor_value_info("lora_B", TensorProto.FLOAT16, ["rb", n])]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.register_custom_ops_library(str(kernel_lib))
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal(shape).astype(np.float32)
    a = (rng.standard_normal((k, rank)) * 0.1).astype(np.float16)
    b = (rng.standard_normal((rank, n)) * 0.1).astype(np.float16)
    y = sess.run(None, {"x": x, "lora_A": a, "lora_B": b})[0]
    base = session(kernel_lib, w, list(shape)).run(None, {"x": x})[0]
    update = (x.astype(np.float64) @ a.astype(np.float64)) @ b.astype(np.float64)
    np.testing.assert_allclose(y - base, update, atol=1e-5 * max(1.0, np.abs(update).max()))
    if rank:
        with pytest.raises(Exception, match="adapter factors do not fit"):
            sess.run(None, {"x": x, "lora_A": a, "lora_B": np.concatenate([b, b[:1]])})


@pytest.mark.parametrize("shape,n", [((1, 1, 576), 4099), ((1, 9, 64), 30), ((3, 4, 96), 70), ((1, 40, 64), 100)])
def test_q8_head_kernel_matches_numpy(kernel_lib, kernel_path, shape, n):
    rng = np.random.default_rng(n)
    k = shape[-1]
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    table, d = quantize_symmetric_8bit(w, 32)  # q + 128, as the embedding's GatherBlockQuantized reads it
    w8 = ((table.astype(np.float64) - 128) * d[..., None]).reshape(n, k)
    x = rng.standard_normal(shape).astype(np.float32)
    sess = op_session(kernel_lib, OP_TYPE_Q8, {"table": table, "scales": d.reshape(-1)}, list(shape))
    y = sess.run(None, {"x": x})[0]
    assert y.shape == (*shape[:-1], n)
    if kernel_path != "avx2":
        select_path(kernel_lib, "avx2")
        np.testing.assert_array_equal(y, sess.run(None, {"x": x})[0])
    xq, _, _ = kernel_activations(x)
    ref = (xq.reshape(-1, k) @ w8.T).reshape(*shape[:-1], n)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    exact = x.astype(np.float64) @ w8.T
    assert (np.abs(y - exact) <= rounding_bound(x, w8) * 1.001 + 1e-5).all()


def test_a_head_rows_logits_do_not_depend_on_the_other_rows_below_the_gemm(kernel_lib, kernel_path):
    """Q80MatMul's tiles (rows of 8, 4, 2 and 1 on the AVX512-VNNI path, 23 rows) give each row the bits of its
    one-row call, so a batched decode step's logits are each sequence's own (from 32 rows the float GEMM differs in
    the last bits; engine/batch_decode.py stops at 31 rows)."""
    rng = np.random.default_rng(3)
    k, n, rows = 576, 1000, 23
    table, d = quantize_symmetric_8bit(rng.standard_normal((n, k)).astype(np.float32) * 0.05, 32)
    x = rng.standard_normal((1, rows, k)).astype(np.float32)
    weights = {"table": table, "scales": d.reshape(-1)}
    together = op_session(kernel_lib, OP_TYPE_Q8, weights, [1, rows, k]).run(None, {"x": x})[0][0]
    alone = op_session(kernel_lib, OP_TYPE_Q8, weights, [1, 1, k])
    for r in range(rows):
        np.testing.assert_array_equal(together[r], alone.run(None, {"x": x[:, r:r + 1]})[0][0, 0])


@pytest.mark.parametrize("shape", [(1, 40, 64), (3, 5, 96), (2, 1, 64)])
def test_the_head_computes_only_each_sequences_last_position_when_asked_on_this_thread(kernel_lib, shape):
    """last_position_only (generation's prefill): Q80MatMul computes each sequence's last position as a one-row call
    would, and leaves the positions generation does not read unwritten; outside the block every position is
    computed again."""
    from engine.kernels import last_position_only

    rng = np.random.default_rng(shape[1])
    k, n = shape[-1], 300
    table, d = quantize_symmetric_8bit(rng.standard_normal((n, k)).astype(np.float32) * 0.05, 32)
    sess = op_session(kernel_lib, OP_TYPE_Q8, {"table": table, "scales": d.reshape(-1)}, [None, None, k])
    x = rng.standard_normal(shape).astype(np.float32)
    every = sess.run(None, {"x": x})[0]
    with last_position_only(kernel_lib):
        last = sess.run(None, {"x": x})[0]
        # the unwritten positions hold what the output buffer held: give it NaN and look (the head's output is
        # ONNX Runtime's to allocate, so this reads it back through an output bound in advance)
        bound = np.full((*shape[:-1], n), np.nan, np.float32)
        binding = sess.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cpu", 0, np.float32, bound.shape, bound.ctypes.data)
        sess.run_with_iobinding(binding)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], every)
    assert not np.isnan(every).any()
    for b in range(shape[0]):
        np.testing.assert_array_equal(last[b, -1], sess.run(None, {"x": x[b:b + 1, -1:]})[0][0, 0])
        np.testing.assert_array_equal(bound[b, -1], last[b, -1])
        assert np.isnan(bound[b, :-1]).all()  # not computed
    with last_position_only(None):  # an export without the kernels: nothing to switch
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], every)


def test_a_path_is_chosen_by_cpuid_forced_by_the_environment_and_an_impossible_one_refused(kernel_lib, tmp_path):
    import os
    import subprocess
    import sys

    paths = supported_paths(kernel_lib)
    assert "avx2" in paths
    assert active_path(kernel_lib) == paths[-1]  # the last of PATHS the CPU has: the fastest
    with pytest.raises(ValueError, match="unknown kernel path 'neon'"):
        select_path(kernel_lib, "neon")
    for name in set(PATHS) - set(paths):
        with pytest.raises(ValueError, match=f"this CPU cannot run the {name} path"):
            select_path(kernel_lib, name)
    # SLMOPS_KERNEL_PATH is read when the library is first used in a process
    code = f"from engine.kernels import active_path; print(active_path({str(kernel_lib)!r}))"
    for name in paths:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "SLMOPS_KERNEL_PATH": name})
        assert out.stdout.strip() == name


def test_fused_kernel_refuses_mismatched_input_with_a_reason(kernel_lib):
    rng = np.random.default_rng(0)
    sess = session(kernel_lib, q4_1_weights(rng, 64, 64), [1, 1, None])
    with pytest.raises(Exception, match="A's last dimension differs from B's K"):
        sess.run(None, {"x": rng.standard_normal((1, 1, 96)).astype(np.float32)})


def test_missing_compiler_is_reported_not_raised_as_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(KernelUnavailable, match="cannot run the C\\+\\+ compiler"):
        library(tmp_path / "cache")


def test_tiny_fused_export_ships_its_kernel_and_agrees_with_the_portable_graph(tiny_engine):
    from pathlib import Path

    from engine.configs import QuantizeConfig
    from engine.ort_genai import OgModel

    runs = {kernel: tiny_engine.start_run(QuantizeConfig(model_id="tiny", kernel=kernel, verify_tokens=256))
            for kernel in ("fused", "portable")}
    paths = {}
    for kernel, run_id in runs.items():
        run = tiny_engine.wait_run(run_id, timeout=600)
        assert run.status.value == "succeeded", run.error
        metric = {m.name: m.value for m in tiny_engine.run_metrics(run_id)}
        assert metric["fused_kernel"] == (1.0 if kernel == "fused" else 0.0)
        paths[kernel] = Path(tiny_engine.get_model(run.summary["output"]).path)
    assert (paths["fused"] / "slmops_q41.so").is_file() and not (paths["portable"] / "slmops_q41.so").exists()
    assert '"custom_ops_library": "slmops_q41.so"' in (paths["fused"] / "genai_config.json").read_text()
    import onnx

    ops = [n.op_type for n in onnx.load(str(paths["fused"] / "model.onnx"), load_external_data=False).graph.node]
    layers = sum(1 for n in onnx.load(str(paths["portable"] / "model.onnx"), load_external_data=False).graph.node
                 if n.op_type == "GroupQueryAttention")
    # per layer q/k/v share one call (the builder's packed qkv_proj, or a Split), gate/up another that also joins them
    # as silu(gate)·up (no Split, Sigmoid or Muls left of the gated MLP); o and down their own: 4 calls, not 5 or 7
    assert ops.count("Q41MatMul") == 3 * layers and ops.count("Q41MatMulSwiGLU") == layers and "Q80MatMul" in ops
    assert "Sigmoid" not in ops
    domains = {n.domain for n in onnx.load(str(paths["fused"] / "model.onnx"), load_external_data=False).graph.node
               if n.op_type == OP_TYPE_ATTENTION}
    assert domains == {DOMAIN} and any(f"attention: {layers} GroupQueryAttention" in x.message
                                       for x in tiny_engine.run_logs(runs["fused"]))
    logs = [x.message for x in tiny_engine.run_logs(runs["fused"])]
    assert any("share one call" in m for m in logs) and any(f"{layers} SiLU-gated MLPs" in m for m in logs)
    ids = list(range(5, 40))
    fused, portable = (OgModel(paths[k]).logits(ids) for k in ("fused", "portable"))
    # the same Q4_1 weights in both; the portable graph rounds the prompt's activations to int8, the fused one to
    # ~16 bits, so they differ by the portable graph's int8 error
    np.testing.assert_allclose(fused, portable, atol=2e-2 * np.abs(portable).max())
    assert (fused.argmax(-1) == portable.argmax(-1)).mean() >= 0.9
    # generation's prefill computes the head at the last position only: the same tokens as with every position
    # (a prompt under 32 tokens, so both take the same one-row path for it), and scoring still sees every position
    model, every = OgModel(paths["fused"]), OgModel(paths["fused"])
    every.kernel_library = None
    assert model.kernel_library == paths["fused"] / "slmops_q41.so"
    prompt = ids[:20]
    assert model.generate_ids(prompt, 12)[0] == every.generate_ids(prompt, 12)[0]
    gen = model.generator(40)
    model.prefill(gen, prompt)
    head = np.asarray(gen.get_output("logits"), dtype=np.float32).reshape(len(prompt), -1)
    np.testing.assert_array_equal(head[-1], every.logits(prompt)[-1])
    assert not np.isnan(model.logits(prompt)).any()


def test_without_a_compiler_the_job_writes_the_portable_graph_and_says_why(tiny_engine, monkeypatch, tmp_path):
    from pathlib import Path

    from engine.configs import QuantizeConfig

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    run_id = tiny_engine.start_run(QuantizeConfig(model_id="tiny", verify_tokens=0))
    run = tiny_engine.wait_run(run_id, timeout=600)
    assert run.status.value == "succeeded", run.error
    log = "\n".join(line.message for line in tiny_engine.run_logs(run_id))
    assert "fused kernel unavailable: cannot run the C++ compiler" in log and "portable ONNX Runtime ops" in log
    assert not (Path(tiny_engine.get_model(run.summary["output"]).path) / "slmops_q41.so").exists()
