"""The library's attention op (engine/kernels/attention.cc, slmops.GroupQueryAttention) against ONNX Runtime's
com.microsoft.GroupQueryAttention on the same inputs: one node as the builder writes it, run both ways."""
import numpy as np
import pytest

from engine.kernels import DOMAIN, OP_TYPE_ATTENTION, cpu_supported

pytestmark = pytest.mark.skipif(cpu_supported() is not None, reason=f"{cpu_supported()}")

HEADS, KV_HEADS, HEAD = 9, 3, 64


def attention_sessions(lib):
    """One GroupQueryAttention node as the builder writes it (packed QKV, rotary, float cache), from ONNX Runtime's
    domain and from the kernel library's: (theirs, ours)."""
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper

    inputs = [helper.make_tensor_value_info("qkv", T.FLOAT, ["B", "S", (HEADS + 2 * KV_HEADS) * HEAD]),
              helper.make_tensor_value_info("past_k", T.FLOAT, ["B", KV_HEADS, "P", HEAD]),
              helper.make_tensor_value_info("past_v", T.FLOAT, ["B", KV_HEADS, "P", HEAD]),
              helper.make_tensor_value_info("seqlens_k", T.INT32, ["B"]),
              helper.make_tensor_value_info("total", T.INT32, []),
              helper.make_tensor_value_info("cos", T.FLOAT, [4096, HEAD // 2]),
              helper.make_tensor_value_info("sin", T.FLOAT, [4096, HEAD // 2])]
    outputs = [helper.make_tensor_value_info(name, T.FLOAT, None) for name in ("out", "present_k", "present_v")]
    sessions = []
    for domain in ("com.microsoft", DOMAIN):
        node = helper.make_node(OP_TYPE_ATTENTION, ["qkv", "", "", "past_k", "past_v", "seqlens_k", "total", "cos",
                                                    "sin"], ["out", "present_k", "present_v"], domain=domain,
                                num_heads=HEADS, kv_num_heads=KV_HEADS, scale=0.125, do_rotary=1,
                                rotary_interleaved=0)
        model = helper.make_model(helper.make_graph([node], "g", inputs, outputs),
                                  opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.register_custom_ops_library(str(lib))
        sessions.append(ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]))
    return sessions


def attention_feeds(rng, batch, seq, past, seqlens, total):
    angles = np.outer(np.arange(4096), 1.0 / 10000 ** (np.arange(0, HEAD, 2) / HEAD))
    return {"qkv": rng.standard_normal((batch, seq, (HEADS + 2 * KV_HEADS) * HEAD)).astype(np.float32),
            "past_k": rng.standard_normal((batch, KV_HEADS, past, HEAD)).astype(np.float32),
            "past_v": rng.standard_normal((batch, KV_HEADS, past, HEAD)).astype(np.float32),
            "seqlens_k": np.array(seqlens, np.int32), "total": np.array(total, np.int32),
            "cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}


# (batch, S, past buffer length, seqlens_k, total_sequence_length): a first prompt, decode steps of sequences of
# different lengths (in a buffer longer than them, as engine/batch_decode.py keeps its rows; past the 256-key chunks
# of the decode path), and a prompt after a past (a chat's next turn)
ATTENTION_CASES = [(1, 7, 0, [6], 7), (1, 70, 0, [69], 70), (1, 1, 40, [40], 41), (3, 1, 100, [10, 30, 49], 50),
                   (4, 1, 700, [600, 255, 256, 3], 601), (1, 5, 20, [24], 25)]


@pytest.mark.parametrize("batch,seq,past,seqlens,total", ATTENTION_CASES)
def test_attention_op_computes_what_onnxruntimes_computes(kernel_lib, batch, seq, past, seqlens, total):
    theirs, ours = attention_sessions(kernel_lib)
    feeds = attention_feeds(np.random.default_rng(batch * 100 + seq), batch, seq, past, seqlens, total)
    expected, got = theirs.run(None, feeds), ours.run(None, feeds)
    for name, a, b in zip(("output", "present key", "present value"), expected, got):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b, a, atol=1e-5, err_msg=name)


def test_attention_op_decodes_in_place_in_a_shared_cache_and_a_row_alone_gets_its_batched_bits(kernel_lib):
    """past and present one buffer (genai's share-buffer mode, and the batcher's): the new keys land at each
    sequence's end; a sequence decoded alone gets the bits it gets among others."""
    import onnxruntime as ort

    theirs, ours = attention_sessions(kernel_lib)
    lengths = [600, 20, 300]
    feeds = attention_feeds(np.random.default_rng(7), 3, 1, 640, [n for n in lengths], max(lengths) + 1)

    def run(sess, rows):
        io = sess.io_binding()
        part = {k: (v[rows] if k in ("qkv", "past_k", "past_v", "seqlens_k") else v) for k, v in feeds.items()}
        part["past_k"], part["past_v"] = part["past_k"].copy(), part["past_v"].copy()
        for name in ("qkv", "seqlens_k", "total", "cos", "sin"):
            io.bind_cpu_input(name, part[name])
        for name in ("k", "v"):
            cache = ort.OrtValue.ortvalue_from_numpy(part[f"past_{name}"])
            io.bind_ortvalue_input(f"past_{name}", cache)
            io.bind_ortvalue_output(f"present_{name}", cache)
        io.bind_output("out")
        sess.run_with_iobinding(io)
        return io.get_outputs()[0].numpy(), part["past_k"], part["past_v"]

    expected, got = run(theirs, slice(0, 3)), run(ours, slice(0, 3))
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, atol=1e-5)
    alone = run(ours, slice(1, 2))
    np.testing.assert_array_equal(alone[0], got[0][1:2])
    np.testing.assert_array_equal(alone[1], got[1][1:2])


def test_attention_op_refuses_what_it_does_not_compute_with_a_reason(kernel_lib):
    _, ours = attention_sessions(kernel_lib)
    feeds = attention_feeds(np.random.default_rng(0), 2, 3, 10, [9, 9], 12)  # a prompt after a past, two sequences
    with pytest.raises(Exception, match="a prompt after a past must be one sequence"):
        ours.run(None, feeds)
    feeds = attention_feeds(np.random.default_rng(0), 1, 1, 10, [45], 41)  # past the cache it would write
    with pytest.raises(Exception, match="seqlens_k out of range"):
        ours.run(None, feeds)
