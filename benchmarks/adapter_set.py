"""Two LoRA adapters over one int4 ONNX export of the bundled model: their checks, switching, memory, decode speed and
an OpenAI-client run that alternates them.

    python benchmarks/adapter_set.py [--home DIR] [--threads 2] [--reps 8]

1. Trains two LoRA adapters of the bundled model as one adapter set (the `adapter_set` job; skipped when the
   workspace has them): `ft-json` on the bundled request → JSON task (r 8 on q_proj, v_proj: the fine-tune job's
   defaults) and `ft-label` on the bundled ticket → label task (r 8 on all seven attention and MLP matrices), each
   with its task's evaluation file held out and scored on its task before and after (95 % intervals).
2. Exports the base once with both adapters (the quantize job with `adapters`), and the base alone (plain int4).
   Prints the quantize job's per-adapter check: greedy-token agreement of the export with the transformers adapter
   over the held-out examples, and both models' answer-match scores there with 95 % Wilson intervals.
3. In one process: resident memory with the base loaded, then with one, two and three adapters loaded (the third is
   ft-json's file under another name); the time to start a request with an adapter other than the last one against
   the same one (generator + set_active_adapter + a 1-token prompt), alternated; decode tok/s (128 tokens after a
   chat prompt, greedy) of the plain export, the adapter export with no adapter, with ft-json and with ft-label,
   interleaved round-robin, medians with distribution-free 95 % intervals (engine.stats).
4. Serves the export and both adapters (Engine.start_server) and drives it with the `openai` client: 8 requests at
   once alternating BASE:ft-json and BASE:ft-label; each reply must equal the one its adapter gives alone.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "assets" / "datasets"
ALL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
ADAPTERS = {"ft-json": ("request_to_json", "q_proj,v_proj"), "ft-label": ("ticket_label", ALL)}


def train_set(engine, base: str, threads: int) -> None:
    """Both adapters by one adapter_set job (skipped when the workspace has them); prints the set's table."""
    from engine import AdapterSetConfig

    if not all(engine.store.has_model(name) for name in ADAPTERS):
        print(f"training the adapter set {', '.join(ADAPTERS)} …", file=sys.stderr, flush=True)
        config = AdapterSetConfig(model_id=base, threads=threads, adapters=[
            {"name": name, "train_path": str(DATA / f"{task}.train.jsonl"), "task": task, "target_modules": targets}
            for name, (task, targets) in ADAPTERS.items()])
        run = engine.wait_run(engine.start_run(config), timeout=7200)
        assert run.status.value == "succeeded", run.error
    run = engine.get_run(engine.get_model(next(iter(ADAPTERS))).run_id)
    if run.kind != "adapter_set":
        return
    print(f"adapter set: run {run.id}, {run.summary['wall_s']:.0f} s")
    print("\n| adapter | task | task score before | after (95 % CI) | eval loss after | wall s |")
    print("|---|---|---|---|---|---|")
    for r in run.summary["adapters"]:
        print(f"| {r['adapter']} | {r['task']} | {r['score_before']:.2f} | {r['score_after']:.2f} "
              f"({r['ci_low']:.2f}–{r['ci_high']:.2f}) | {r['eval_loss_after']:.4f} | {r['wall_s']:.0f} |")


def export(engine, name: str, **settings):
    from engine import QuantizeConfig

    if not engine.store.has_model(name):
        print(f"exporting {name} …", file=sys.stderr, flush=True)
        run = engine.wait_run(engine.start_run(QuantizeConfig(output_name=name, **settings)), timeout=7200)
        assert run.status.value == "succeeded", (run.error, [line.message for line in engine.run_logs(run.id)][-5:])
    model = engine.get_model(name)
    return model, engine.get_run(model.run_id)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def decode_tok_s(lm, prompt_ids: list[int], tokens: int = 128) -> float:
    import numpy as np

    gen = lm.generator(len(prompt_ids) + tokens)
    gen.append_tokens(np.asarray([prompt_ids], dtype=np.int32))
    gen.generate_next_token()
    t0 = time.perf_counter()
    for _ in range(tokens - 1):
        gen.generate_next_token()
    return (tokens - 1) / (time.perf_counter() - t0)


def start_ms(lm, prompt_ids: list[int]) -> float:
    """Milliseconds from a new request to its first token: generator, adapter, prompt."""
    import numpy as np

    t0 = time.perf_counter()
    gen = lm.generator(len(prompt_ids) + 2)
    gen.append_tokens(np.asarray([prompt_ids], dtype=np.int32))
    gen.generate_next_token()
    return (time.perf_counter() - t0) * 1e3


def fmt(interval, unit: str = "", digits: int = 1) -> str:
    m, lo, hi = interval
    return f"{m:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=str(ROOT / "workspace"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=8)
    args = ap.parse_args()

    from engine import Engine, Settings
    from engine.ort_genai import OgModel
    from engine.scoring import wilson_interval
    from engine.stats import median_interval, within_noise

    engine = Engine(Settings(home=Path(args.home), offline=True))
    base = engine.ensure_default_model()
    if base.run_id and not base.ready:
        engine.wait_run(base.run_id, timeout=900)
    train_set(engine, base.id, args.threads)
    names = list(ADAPTERS)
    multi, run = export(engine, f"{base.id}-adapters", model_id=base.id, adapters=names, threads=args.threads,
                        adapter_examples=200)
    plain, plain_run = export(engine, f"{base.id}-int4-plain", model_id=base.id, threads=args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {args.threads}")
    print(f"export {multi.id}: {multi.size_bytes / 1e6:.1f} MB with adapters; plain int4 {plain.size_bytes / 1e6:.1f} "
          "MB")
    print("\n| adapter | held-out examples | greedy-token agreement (tokens) | export score (95 % CI) | "
          "transformers score (95 % CI) | kept | convert + check s |")
    print("|---|---|---|---|---|---|---|")
    def score(r: dict, key: str) -> str:
        lo, hi = wilson_interval(round(r[key] * r["examples"]), r["examples"])
        return f"{r[key]:.2f} ({lo:.2f}–{hi:.2f})"
    for r in run.summary["adapters"]:
        n = r["examples"]
        print(f"| {r['adapter']} | {n} | {r['greedy_agreement']:.3f} ({r['tokens']}) | {score(r, 'export_score')} | "
              f"{score(r, 'source_score')} | {r['score_kept']:.3f} | {r['convert_s']} |")

    # ---- one process: memory, switching, decode ------------------------------------------------------------
    before = rss_mb()
    lm = OgModel(multi.path, threads=args.threads)
    prompt = lm.prompt_ids([{"role": "user", "content": "Write a short story about a lighthouse."}])
    lm.generate_ids(prompt, 8)
    memory = {"base": rss_mb()}
    views = {}
    for i, name in enumerate(names):
        views[name] = lm.with_adapter(name)
        views[name].generate_ids(prompt, 8)
        memory[f"{i + 1} adapters"] = rss_mb()
    third = lm.with_adapter("third", Path(multi.path) / "adapters" / "ft-json.onnx_adapter")  # ft-json's size
    third.generate_ids(prompt, 8)
    memory["3 adapters"] = rss_mb()
    print(f"\nresident memory (MB, process before loading {before:.0f}): " +
          ", ".join(f"{k} {v:.0f}" for k, v in memory.items()) +
          f"; 3 adapters ÷ 1 adapter {memory['3 adapters'] / memory['1 adapters']:.3f}")

    short = lm.prompt_ids([{"role": "user", "content": "Hi"}])
    alternate, same = [], []
    for _ in range(5):  # warm
        start_ms(views[names[0]], short), start_ms(views[names[1]], short)
    for _ in range(args.reps * 4):
        alternate += [start_ms(views[names[0]], short), start_ms(views[names[1]], short)]
        same += [start_ms(views[names[1]], short), start_ms(views[names[1]], short)]
    alt, sam = median_interval(alternate), median_interval(same)
    print(f"request start with a 1-token prompt (ms): switching adapters every request {fmt(alt, digits=2)}, "
          f"same adapter {fmt(sam, digits=2)}; switch cost {alt[0] - sam[0]:.2f} ms"
          f"{' (within noise)' if within_noise(alt, sam) else ''}")

    plain_lm = OgModel(plain.path, threads=args.threads)
    sides = {"plain int4 (no adapter inputs)": plain_lm, "adapter export, no adapter": lm,
             **{f"adapter export + {n}": v for n, v in views.items()}}
    for m in sides.values():
        decode_tok_s(m, prompt, 32)
    speeds = {k: [] for k in sides}
    for _ in range(args.reps):
        for k, m in sides.items():
            speeds[k].append(decode_tok_s(m, prompt))
    plain = "plain int4 (no adapter inputs)"
    ref = median_interval(speeds[plain])
    print("\n| decode, 128 tokens | tok/s median (95 % CI) | × plain int4 |")
    print("|---|---|---|")
    for k, v in speeds.items():
        iv = median_interval(v)
        noise = " (within noise)" if k != plain and within_noise(iv, ref) else ""
        print(f"| {k} | {fmt(iv)} | {iv[0] / ref[0]:.3f}{noise} |")

    # ---- serving: the openai client alternating adapters, 8 at once ----------------------------------------
    from concurrent.futures import ThreadPoolExecutor

    import openai

    refs = engine.serve_refs([multi.id], names)
    server = engine.start_server(refs, port=8765, max_concurrency=8)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        listed = [m.id for m in client.models.list()]
        questions = {"ft-json": "please order 3 lemons for Friday",
                     "ft-label": "Label this support ticket as one of: billing, delivery, refund, login, bug, cancel. "
                                 "Answer with the label only.\nTicket: I can't sign in since the update."}

        def ask(ref: str) -> tuple[str, float]:
            t0 = time.perf_counter()
            reply = client.chat.completions.create(model=ref, temperature=0, max_tokens=64, messages=[
                {"role": "user", "content": questions[ref.split(":")[1]]}])
            return reply.choices[0].message.content, time.perf_counter() - t0
        order = [refs[1 + i % 2] for i in range(8)]
        alone = {ref: ask(ref)[0] for ref in refs[1:]}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(ask, order))
        wall = time.perf_counter() - t0
        same = sum(text == alone[ref] for (text, _), ref in zip(together, order))
        print(f"\nopenai client: /v1/models → {listed}")
        for ref in refs[1:]:
            print(f"  {ref}: {alone[ref]!r}")
        print(f"8 requests at once alternating {refs[1]} / {refs[2]}: {same}/8 replies equal to the adapter's own, "
              f"all done in {wall:.1f} s (slowest request {max(s for _, s in together):.1f} s)")
    finally:
        engine.stop_server(server.port)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
