"""The SiLU-gated MLP in one kernel call (Q41MatMulSwiGLU) against the same export with it split back into ONNX
Runtime's ops (Q41MatMul, Split, Sigmoid, Mul, Mul; same weights), interleaved in one process: decode tok/s (3 chat
prompts × 128 greedy tokens) and the seconds to the first token of a 512-token prompt, medians with 95 % intervals.

    python benchmarks/swiglu_fusion.py EXPORT_FOLDER [--rounds 8] [--threads 2]

EXPORT_FOLDER: a default int4 export made with the fused kernel (e.g. llama_compare.py's compare-onnx-int4).
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def unfused_copy(src: Path, dst: Path) -> int:
    """dst = src with each Q41MatMulSwiGLU as Q41MatMul + Split + Sigmoid + Mul + Mul; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    shutil.copytree(src, dst)
    model = onnx.load(str(src / "model.onnx"), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    nodes, split_sizes, count = [], [], 0
    for n in model.graph.node:
        if n.op_type != "Q41MatMulSwiGLU":
            nodes.append(n)
            continue
        count += 1
        half = inits[n.input[3]].dims[1] // 2  # mins [K/32, N]
        sizes, joined, g, u, s, a = (n.name + x for x in ("/sizes", "/joined", "/g", "/u", "/s", "/a"))
        split_sizes.append(numpy_helper.from_array(np.array([half, half], np.int64), sizes))
        nodes += [helper.make_node("Q41MatMul", list(n.input), [joined], name=n.name + "_plain", domain=n.domain),
                  helper.make_node("Split", [joined, sizes], [g, u], name=n.name + "/Split", axis=-1),
                  helper.make_node("Sigmoid", [g], [s], name=n.name + "/Sigmoid"),
                  helper.make_node("Mul", [g, s], [a], name=n.name + "/Mul"),
                  helper.make_node("Mul", [a, u], [n.output[0]], name=n.name + "/MulUp")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(split_sizes)
    onnx.save_model(model, str(dst / "model.onnx"))  # the weights stay in the copied model.onnx.data
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from quantize_decode import PROMPTS

    from engine.bench import OgBackend
    from engine.eval_text import standard_text
    from engine.stats import median_interval

    with tempfile.TemporaryDirectory() as tmp:
        count = unfused_copy(args.export, Path(tmp) / "unfused")
        print(f"{count} Q41MatMulSwiGLU calls per step; the copy runs them as 5 ops each")
        sides = {"fused (Q41MatMulSwiGLU)": OgBackend(str(args.export), threads=args.threads),
                 "split (Q41MatMul, Split, Sigmoid, Mul, Mul)": OgBackend(str(Path(tmp) / "unfused"),
                                                                          threads=args.threads)}
        first = next(iter(sides.values()))
        chats = [first.chat_ids(p) for p in PROMPTS]
        long_prompt = first.encode(standard_text())[:512]
        results = {k: ([], []) for k in sides}
        for backend in sides.values():
            backend.generate(chats[0], 8)
            backend.generate(long_prompt, 2)
        order = list(sides)
        for rnd in range(args.rounds):
            for label in order if rnd % 2 == 0 else order[::-1]:
                tokens = seconds = 0.0
                for ids in chats:
                    _, times, _ = sides[label].generate(ids, 128)
                    tokens += len(times) - 1
                    seconds += times[-1] - times[0]
                results[label][0].append(tokens / seconds)
                _, times, t0 = sides[label].generate(long_prompt, 1)
                results[label][1].append(times[0] - t0)
        for label, (decode, prompt) in results.items():
            d, p = median_interval(decode), median_interval(prompt)
            print(f"{label}: decode {d[0]:.1f} ({d[1]:.1f}–{d[2]:.1f}) tok/s; 512-token prompt {p[0]:.3f} "
                  f"({p[1]:.3f}–{p[2]:.3f}) s")


if __name__ == "__main__":
    main()
