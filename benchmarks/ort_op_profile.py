"""Where one decode step of an ONNX Runtime GenAI export spends its time: ORT's profiler, kernel time per op type
and per role of the affine int4 rewrite (BlockSums / Offsets / AddOffsets are its correction path).

    python benchmarks/ort_op_profile.py MODEL_FOLDER [--past 100] [--steps 50] [--threads 2] [--prompt 0]

Runs the decoder directly with onnxruntime (1 new token after --past cached ones, random KV cache; with
--prompt N, one prompt of N tokens and no cache instead: the prefill of a long prompt); the
profiler's own overhead inflates absolute times, so compare the shares between exports, not the milliseconds.
"""
import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--past", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=0, help="profile the prefill of a prompt of this many tokens")
    args = ap.parse_args()
    path = args.model.rstrip("/") + "/model.onnx"
    graph = onnx.load(path, load_external_data=False).graph
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.enable_profiling = True
    so.profile_file_prefix = tempfile.mkdtemp() + "/profile"
    library = os.path.join(args.model, "slmops_q41.so")  # an export with the fused Q4_1 kernel ships its library
    if os.path.exists(library):
        so.register_custom_ops_library(library)
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    new = max(args.prompt, 1)
    past = 0 if args.prompt else args.past
    ids = np.random.default_rng(0).integers(100, 40000, (1, new))
    feeds = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((1, past + new), np.int64)}
    for i in graph.input:
        if i.name.startswith("past_key_values"):
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            feeds[i.name] = np.random.randn(1, dims[1], past, 64 if not dims[3] else dims[3]).astype(np.float32)
    for _ in range(5):
        session.run(["logits"], feeds)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        session.run(["logits"], feeds)
    print(f"{(time.perf_counter() - t0) / args.steps * 1000:.1f} ms per step (profiling on)")
    events = json.load(open(session.end_profiling()))
    by_op, by_role = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op, name = e["args"].get("op_name"), e["name"]
            by_op[op] += e["dur"]
            role = next((r for r in ("BlockSums", "AddOffsets", "Offsets") if f"/{r}" in name), op)
            by_role[role] += e["dur"]
    steps = args.steps + 5
    total = sum(by_op.values())
    print(f"kernel time {total / steps / 1000:.2f} ms per step")
    for role, us in by_role.most_common():
        print(f"  {role:36s} {us / steps:8.0f} µs  {us / total:6.1%}")


if __name__ == "__main__":
    main()
