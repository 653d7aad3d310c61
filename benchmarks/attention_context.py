"""Decode speed against context length with the kernel library's attention (slmops.GroupQueryAttention,
engine/kernels/attention.cc) and with ONNX Runtime's (com.microsoft.GroupQueryAttention), on one int4 export:

    python benchmarks/attention_context.py MODEL_DIR [--contexts 50 500 1500] [--rows 1 8] [--rounds 3]

MODEL_DIR: an int4 export made by the quantize job with the fused kernels (its attention nodes are the library's).
The other side is the same export with those nodes given back to ONNX Runtime (the same files, a graph that differs
in the attention nodes' domain only), in a folder of links beside it. Both load in this process; each round measures
each (context, rows) cell on both, alternating which goes first. A cell: `rows` streams of the same prompt, the
chat prompt repeated to `context` tokens, decoded together by engine/batch_decode.py (one ONNX Runtime step for all
rows) for --new-tokens greedy tokens; ms per decode step (prompts left out). Medians over the rounds, and whether
both sides' tokens agree.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def ort_attention_copy(model: Path, where: Path) -> Path:
    """`model` with its slmops attention nodes back in ONNX Runtime's domain: a hard link to its weights (or a copy),
    copies of its other files (onnxruntime-genai loads nothing from outside the model's folder), a new graph."""
    import shutil

    import onnx

    out = where / (model.name + "-ort-attention")
    out.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if f.name == "model.onnx.data":  # a hard link (genai refuses a path that leaves the folder)
            try:
                os.link(f, out / f.name)
            except OSError:
                shutil.copy2(f, out / f.name)
        elif f.is_file() and f.name != "model.onnx":
            shutil.copy2(f, out / f.name)
    graph = onnx.load(str(model / "model.onnx"), load_external_data=False)
    swapped = 0
    for node in graph.graph.node:
        if node.op_type == "GroupQueryAttention" and node.domain == "slmops":
            node.domain = "com.microsoft"
            swapped += 1
    if not swapped:
        raise SystemExit(f"{model} has no slmops.GroupQueryAttention node: build it with this version's quantize job")
    onnx.save_model(graph, str(out / "model.onnx"))
    return out


def step_ms(lm, ids: list[int], rows: int, new: int) -> tuple[float, list[list[int]]]:
    batcher = lm.batcher
    batcher.step_tokens, batcher.step_seconds = 0, 0.0
    got: dict[int, list[int]] = {}

    def one(i: int) -> None:
        got[i] = [token for token, _ in lm.iter_tokens(ids, new)]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(rows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return batcher.step_seconds / batcher.step_tokens * rows * 1e3, [got[i] for i in range(rows)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--contexts", type=int, nargs="+", default=[50, 500, 1500])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = Path(args.model)
    with tempfile.TemporaryDirectory(dir=model.parent) as where:  # beside it: the same disk, for the hard link
        return measure(args, {"library": model, "onnxruntime": ort_attention_copy(model, Path(where))})


def measure(args, sides: dict[str, Path]) -> int:
    from engine.ort_genai import OgModel

    models = {}
    for name, path in sides.items():
        models[name] = OgModel(str(path), args.threads)
        models[name].batch(max(args.rows))
    base = models["library"].prompt_ids([{"role": "user", "content": "Write a short story about a lighthouse keeper."}])
    cells = [(c, r) for c in args.contexts for r in args.rows]
    times = {(name, cell): [] for name in sides for cell in cells}
    agree = {cell: True for cell in cells}
    for rnd in range(args.rounds):
        order = list(sides) if rnd % 2 == 0 else list(sides)[::-1]
        for context, rows in cells:
            ids = (base * (context // len(base) + 1))[:context]
            tokens = {}
            for name in order:
                ms, tokens[name] = step_ms(models[name], ids, rows, args.new_tokens)
                times[(name, (context, rows))].append(ms)
            agree[(context, rows)] &= tokens["library"] == tokens["onnxruntime"]
    print(f"model {sides['library']}, {args.threads} threads, {args.new_tokens} new tokens, "
          f"median of {args.rounds} rounds")
    print(f"{'context':>8}{'rows':>6}{'library ms/step':>17}{'onnxruntime ms/step':>21}{'×':>7}  same tokens")
    for context, rows in cells:
        ours = statistics.median(times[("library", (context, rows))])
        theirs = statistics.median(times[("onnxruntime", (context, rows))])
        print(f"{context:>8}{rows:>6}{ours:>17.2f}{theirs:>21.2f}{theirs / ours:>7.2f}  {agree[(context, rows)]}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
