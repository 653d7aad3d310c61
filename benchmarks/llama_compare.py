"""Our default int4 export against llama.cpp on the same Q4_1 weights (and transformers fp32), pinned: one process,
rounds interleaved (the order rotates each round, a pause of --settle seconds before each turn), the opponent's
version, build and system info recorded.

    python benchmarks/llama_compare.py [--home DIR] [--rounds 6] [--new-tokens 128] [--prompt-tokens 512]
                                       [--threads 2] [--settle 1] [--json FILE]

Needs llama-cpp-python (`pip install llama-cpp-python`: builds llama.cpp from source, ~8 minutes on 2 cores). The
export is built with the engine's own quantize job when the workspace lacks it. Each round, each backend:
  - decode: 3 chat prompts × --new-tokens greedy tokens (EOS ignored), tok/s = tokens after the first ÷ their time;
  - prompt: one prompt of --prompt-tokens tokens of the standard text (the same token ids everywhere), seconds to
    its first token (prefill + one step).
Medians over rounds with distribution-free 95 % intervals (engine.bench.median_interval); a ratio whose intervals
overlap is labelled "within noise". The record: CPU and flags, threads, our kernel's path, llama.cpp's version and
`llama_print_system_info()`, a memory-bandwidth probe and the decode bound it implies (weights read per token).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quantize_decode import PROMPTS, LlamaCppBackend  # noqa: E402

OURS, LLAMA, TORCH = "our int4 export (fused kernel)", "llama.cpp, same Q4_1 weights", "transformers fp32"


def ensure_export(engine) -> tuple[str, str]:
    """(the bundled model's safetensors folder, its default int4 export), built once per workspace."""
    from engine import QuantizeConfig

    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id, timeout=900)
    config = QuantizeConfig(model_id=model.id, output_name="compare-onnx-int4")
    if not engine.store.has_model(config.output_id()):
        print(f"building {config.output_id()} …", file=sys.stderr, flush=True)
        run = engine.wait_run(engine.start_run(config), timeout=1800)
        assert run.status.value == "succeeded", run.error
    return engine.get_model(model.id).path, engine.get_model(config.output_id()).path


def record(threads: int, export: str) -> dict:
    import llama_cpp

    from engine.bench import bandwidth_probe, hardware_record
    from engine.kernels import LIBRARY_NAME, active_path, cpu_flags

    wanted = ("avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "amx_int8")
    weights = sum(p.stat().st_size for p in Path(export).glob("model.onnx*"))
    return {**hardware_record(threads), "cpu_flags": [f for f in wanted if f in (cpu_flags() or [])],
            "our_kernel_path": active_path(Path(export) / LIBRARY_NAME),
            "llama_cpp_python": llama_cpp.__version__,
            "llama_system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "bandwidth_gb_s": round(bandwidth_probe(threads), 1), "our_weights_mb": round(weights / 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/slmops-bench-compare", help="workspace (the export is built here once)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of pause before each backend's turn")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from engine import Engine, Settings
    from engine.bench import OgBackend, TorchBackend
    from engine.stats import median_interval, within_noise
    from engine.eval_text import standard_text
    from engine.models import bundled_gguf_path

    engine = Engine(Settings(home=Path(args.home), offline=True))
    hf, export = ensure_export(engine)
    engine.close()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf)
    chats = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"] for p in PROMPTS]
    long_prompt = tok(standard_text(), add_special_tokens=False)["input_ids"][:args.prompt_tokens]
    makers = {OURS: lambda: OgBackend(export, threads=args.threads),
              LLAMA: lambda: LlamaCppBackend(bundled_gguf_path(), args.threads),
              TORCH: lambda: TorchBackend(hf, threads=args.threads)}
    backends = {}
    for label, make in makers.items():
        backends[label] = make()
        backends[label].generate(chats[0], 8)  # warm-up
        backends[label].generate(long_prompt, 2)
    info = record(args.threads, export)
    print(json.dumps(info, indent=1), flush=True)

    decode = {k: [] for k in backends}
    prompt = {k: [] for k in backends}
    order = list(backends)
    for rnd in range(args.rounds):
        for label in order[rnd % len(order):] + order[:rnd % len(order)]:
            # a pause first: the previous backend's idle threads (llama.cpp's and torch's OpenMP teams spin after
            # each call) would otherwise share the two cores with the next one's first tokens
            time.sleep(args.settle)
            backend = backends[label]
            tokens, seconds = 0, 0.0
            for ids in chats:
                _, times, _ = backend.generate(ids, args.new_tokens)
                tokens += len(times) - 1
                seconds += times[-1] - times[0]
            decode[label].append(tokens / seconds)
            _, times, t0 = backend.generate(long_prompt, 1)
            prompt[label].append(times[0] - t0)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    answers = {}
    question = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    for label, backend in backends.items():
        answers[label] = tok.decode(backend.generate(question, 16, stop_at_eos=True)[0], skip_special_tokens=True)

    dec = {k: median_interval(v) for k, v in decode.items()}
    pre = {k: median_interval(v) for k, v in prompt.items()}
    bound = info["bandwidth_gb_s"] * 1e3 / info["our_weights_mb"]

    def ratio(ours, theirs, faster_is_larger=True):
        r = ours[0] / theirs[0] if faster_is_larger else theirs[0] / ours[0]
        return f"{r:.2f}×" + (" (within noise)" if within_noise(ours, theirs) else "")

    print(f"\n{time.strftime('%Y-%m-%d')}, {info['cpu']}, {args.threads} threads; {args.rounds} interleaved rounds; "
          f"decode: {len(chats)} chat prompts × {args.new_tokens} greedy tokens; prompt: {len(long_prompt)} tokens")
    print(f"llama.cpp (llama-cpp-python {info['llama_cpp_python']}): {info['llama_system_info']}")
    print(f"our kernel path: {info['our_kernel_path']}; bandwidth probe {info['bandwidth_gb_s']} GB/s → decode bound "
          f"{bound:.0f} tok/s for our {info['our_weights_mb']} MB of weights\n")
    print(f"| backend | decode tok/s (95 % CI) | prompt of {len(long_prompt)} tokens, s (95 % CI) | "
          "capital of France |")
    print("|---|---|---|---|")
    for label in backends:
        d, p = dec[label], pre[label]
        print(f"| {label} | {d[0]:.1f} ({d[1]:.1f}–{d[2]:.1f}) | {p[0]:.3f} ({p[1]:.3f}–{p[2]:.3f}) | "
              f"{answers[label].strip()[:40]!r} |")
    print(f"\ndecode: ours {ratio(dec[OURS], dec[LLAMA])} llama.cpp, {ratio(dec[OURS], dec[TORCH])} transformers; "
          f"{dec[OURS][0] / bound:.0%} of the bandwidth bound")
    print(f"prompt speed: ours {ratio(pre[OURS], pre[LLAMA], False)} llama.cpp, "
          f"{ratio(pre[OURS], pre[TORCH], False)} transformers")
    if args.json:
        Path(args.json).write_text(json.dumps({"record": info, "decode_tok_s": decode, "prompt_s": prompt,
                                               "answers": answers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
