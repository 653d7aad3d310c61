"""Decode speed and quality of the bundled model in every runtime we ship or compare with, in one run.

    python benchmarks/quantize_decode.py [--home DIR] [--reps 5] [--new-tokens 128] [--threads 2]

Backends: transformers fp32 (the safetensors conversion), our ONNX fp32, our ONNX int4 (default: affine with the
fused Q4_1 kernel), the same affine int4 on ONNX Runtime's own ops (portable), the builder's int4 (for reference),
and llama.cpp (llama-cpp-python) on the shipped Q4_1 GGUF when it is installed (`pip install llama-cpp-python`:
builds from source in ~7 minutes; the benchmark does not need it to run).
Same prompts (chat template applied once, same token ids everywhere), greedy, exactly --new-tokens tokens per prompt
(EOS ignored so every backend decodes the same count), decode tok/s = (n − 1) / (t_last − t_first), models loaded
once, repetitions interleaved across backends so machine drift hits all alike. Exports are built with the engine's
own quantize job when the workspace lacks them. Perplexity: 4,096 tokens of `pydoc_data.topics`, 512-token windows.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ["Write a short story about a lighthouse keeper.",
           "Explain how a bicycle works to a child.",
           "List five tips for writing clear emails and explain each."]


def ensure_exports(engine) -> dict[str, str]:
    from engine import QuantizeConfig

    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id, timeout=900)
    wanted = {"onnx-fp32": QuantizeConfig(model_id=model.id, precision="fp32", output_name="bench-onnx-fp32"),
              "onnx-int4 (affine, default)": QuantizeConfig(model_id=model.id, output_name="bench-onnx-int4"),
              "onnx-int4 (affine, portable)": QuantizeConfig(model_id=model.id, kernel="portable",
                                                             output_name="bench-onnx-int4-portable"),
              "onnx-int4 (builder)": QuantizeConfig(model_id=model.id, method="builder",
                                                    output_name="bench-onnx-int4-builder")}
    paths = {}
    for label, config in wanted.items():
        if not engine.store.has_model(config.output_id()):
            print(f"building {config.output_id()} …", file=sys.stderr, flush=True)
            run = engine.wait_run(engine.start_run(config.model_copy(update={"verify_tokens": 0})), timeout=1800)
            assert run.status.value == "succeeded", run.error
        paths[label] = engine.get_model(config.output_id()).path
    return {"hf": engine.get_model(model.id).path, **paths}


class LlamaCppBackend:
    """llama.cpp through llama-cpp-python on the shipped GGUF (the same generate/encode calls as engine.bench)."""

    def __init__(self, gguf, threads):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                         verbose=False, logits_all=False)

    def generate(self, ids, n, stop_at_eos=False):
        self.llm.reset()
        tokens, times, t0 = [], [], time.perf_counter()
        for token in self.llm.generate(ids, temp=0.0, top_k=1, reset=True):  # EOS does not stop this loop
            if stop_at_eos and token == self.llm.token_eos():
                break
            tokens.append(token)
            times.append(time.perf_counter())
            if len(times) >= n:
                break
        return tokens, times, t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/slmops-bench-quantize", help="workspace (exports are built here once)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from engine import Engine, Settings
    from engine.bench import OgBackend, TorchBackend, perplexity
    from engine.eval_text import standard_text
    from engine.models import bundled_gguf_path, dir_size

    engine = Engine(Settings(home=Path(args.home), offline=True))
    paths = ensure_exports(engine)
    engine.close()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["hf"])
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for p in PROMPTS]
    backends = {"transformers fp32": (lambda path, threads: TorchBackend(path, threads=threads), paths["hf"])}
    exports = ("onnx-fp32", "onnx-int4 (affine, default)", "onnx-int4 (affine, portable)", "onnx-int4 (builder)")
    for label in exports:
        backends[label] = (OgBackend, paths[label])
    try:
        import llama_cpp  # noqa: F401

        backends["llama.cpp Q4_1 GGUF"] = (LlamaCppBackend, bundled_gguf_path())
    except ImportError:
        print("llama-cpp-python is not installed: skipping llama.cpp (pip install llama-cpp-python)",
              file=sys.stderr)
    loaded = {}
    for label, (cls, path) in backends.items():
        t0 = time.perf_counter()
        loaded[label] = cls(path, args.threads)
        print(f"loaded {label} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        loaded[label].generate(prompts[0], 8)  # warm-up

    speeds: dict[str, list[float]] = {k: [] for k in loaded}
    for rep in range(args.reps):
        for label, backend in loaded.items():
            for ids in prompts:
                _, times, _ = backend.generate(ids, args.new_tokens)
                speeds[label].append((len(times) - 1) / (times[-1] - times[0]))
        print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)

    sizes = {"transformers fp32": dir_size(Path(paths["hf"])), "llama.cpp Q4_1 GGUF": dir_size(bundled_gguf_path())}
    for label in exports:
        sizes[label] = dir_size(Path(paths[label]))
    ppl, answers = {}, {}
    question = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    for label, backend in loaded.items():
        ppl[label] = perplexity(backend, standard_text(), 4096)[0] if hasattr(backend, "logits") else None
        answers[label] = tok.decode(backend.generate(question, 24, stop_at_eos=True)[0], skip_special_tokens=True)

    base_speed = statistics.mean(speeds["transformers fp32"])
    llama_speed = statistics.mean(speeds["llama.cpp Q4_1 GGUF"]) if "llama.cpp Q4_1 GGUF" in speeds else None
    fp32_size, fp32_ppl = sizes["onnx-fp32"], ppl["transformers fp32"]
    rows = []
    print(f"\n{len(PROMPTS)} prompts × {args.reps} repetitions × {args.new_tokens} greedy tokens, {args.threads} "
          "threads; perplexity on 4,096 tokens of pydoc_data.topics")
    print(f"{'backend':30s} {'decode tok/s':>16s} {'×fp32 torch':>11s} {'×llama.cpp':>10s} {'MB':>7s} "
          f"{'size ×fp32':>10s} {'PPL':>7s} {'PPL ×fp32':>9s}")
    for label, values in speeds.items():
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        row = {"backend": label, "decode_tok_s": mean, "std": std, "x_torch": mean / base_speed,
               "x_llama": mean / llama_speed if llama_speed else None, "size_mb": sizes[label] / 1e6,
               "size_ratio": sizes[label] / fp32_size, "ppl": ppl[label],
               "ppl_ratio": ppl[label] / fp32_ppl if ppl[label] else None}
        rows.append(row)
        print(f"{label:30s} {mean:9.1f} ± {std:5.1f} {row['x_torch']:11.2f} "
              f"{row['x_llama'] if row['x_llama'] else float('nan'):10.2f} {row['size_mb']:7.1f} "
              f"{row['size_ratio']:10.3f} {ppl[label] or float('nan'):7.3f} "
              f"{row['ppl_ratio'] or float('nan'):9.4f}")
    print('\nGreedy answer to "What is the capital of France?"')
    for label, text in answers.items():
        print(f"{label:30s} {text.strip()!r}")
        next(r for r in rows if r["backend"] == label)["answer"] = text
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
