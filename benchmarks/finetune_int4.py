"""Does the int4 export of a LoRA fine-tune still do the fine-tune's task?

    python benchmarks/finetune_int4.py [--home DIR] [--limit 100] [--threads 2]

1. Fine-tunes the bundled model with LoRA (the fine-tune job's defaults: r 8 on q_proj, v_proj, 2 epochs) on the
   bundled request → JSON task and merges it (skipped when the workspace already has `ft-json-merged`).
2. Exports the merged model with the engine's own quantize job: fp32 (the reference), the default int4 (affine, fused
   kernel, fine_tune_delta auto) and the same with fine_tune_delta off (quantize the merged weights as they are, the
   behaviour before the delta path). min_agreement 0 so every export is kept and scored.
3. Scores each export greedily with onnxruntime-genai on the task's held-out examples (JSON-equal, as the fine-tune
   job scores), and prints the task score with its 95 % Wilson interval, the score relative to fp32, and each
   export's verify figures (perplexity ratio and next-token agreement on 4,096 tokens of Python's documentation,
   first-token agreement on 16 chat prompts), size and decode speed as its quantize run measured them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TASK = ROOT / "assets" / "datasets" / "request_to_json"


def fine_tune(engine, threads: int) -> str:
    from engine import FineTuneConfig

    base = engine.ensure_default_model()
    if base.run_id and not base.ready:
        engine.wait_run(base.run_id, timeout=900)
    if not engine.store.has_model("ft-json-merged"):
        print("fine-tuning ft-json (LoRA, merged) …", file=sys.stderr, flush=True)
        config = FineTuneConfig(model_id=base.id, train_path=f"{TASK}.train.jsonl", eval_path=f"{TASK}.eval.jsonl",
                                merge=True, eval_max_examples=0, output_name="ft-json", threads=threads)
        run = engine.wait_run(engine.start_run(config), timeout=3600)
        assert run.status.value == "succeeded", run.error
    return "ft-json-merged"


def export(engine, model_id: str, name: str, threads: int, **settings) -> dict:
    from engine import QuantizeConfig

    config = QuantizeConfig(model_id=model_id, output_name=f"{model_id}-{name}", min_agreement=0.0,
                            threads=threads, **settings)
    if not engine.store.has_model(config.output_id()):
        print(f"exporting {config.output_id()} …", file=sys.stderr, flush=True)
        run = engine.wait_run(engine.start_run(config), timeout=3600)
        assert run.status.value == "succeeded", run.error
    model = engine.get_model(config.output_id())
    run = engine.get_run(model.run_id)
    metrics = {m.name: m.value for m in engine.store.metrics(run.id)}
    return {"path": model.path, "size_mb": model.size_bytes / 1e6, "summary": run.summary, "metrics": metrics}


def score(path: str, examples: list[dict], threads: int) -> tuple[int, float]:
    from engine.ort_genai import OgModel
    from engine.scoring import matches, split_conversation

    model = OgModel(path, threads=threads)
    correct, t0 = 0, time.perf_counter()
    for example in examples:
        prompt, reference = split_conversation(example["messages"])
        ids, _ = model.generate_ids(model.prompt_ids(prompt), 64)
        correct += matches(model.decode(ids), reference, "json")
    return correct, time.perf_counter() - t0


def main() -> int:
    from engine import Engine, Settings
    from engine.scoring import wilson_interval

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/slmops-bench-finetune-int4", help="workspace (models are kept here)")
    ap.add_argument("--limit", type=int, default=100, help="held-out examples scored")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    engine = Engine(Settings(home=Path(args.home), offline=True))
    model_id = fine_tune(engine, args.threads)
    exports = {"fp32": export(engine, model_id, "fp32", args.threads, precision="fp32"),
               "int4 (default: affine, fused, fine_tune_delta auto)": export(engine, model_id, "int4", args.threads),
               "int4 (fine_tune_delta off: merged weights rounded)": export(engine, model_id, "int4-nodelta",
                                                                           args.threads, fine_tune_delta="off")}
    lines = Path(f"{TASK}.eval.jsonl").read_text(encoding="utf-8").splitlines()
    examples = [json.loads(line) for line in lines if line.strip()][:args.limit]
    print(f"{model_id}: {len(examples)} held-out examples of request_to_json, greedy, JSON-equal, "
          f"{args.threads} threads")
    print("| export | task score | 95 % interval | × fp32 | first-token agreement | next-token agreement | "
          "PPL × source | MB | decode tok/s | scoring s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = None
    for label, facts in exports.items():
        correct, seconds = score(facts["path"], examples, args.threads)
        reference = reference or correct
        lo, hi = wilson_interval(correct, len(examples))
        m = facts["metrics"]
        print(f"| {label} | {correct}/{len(examples)} | {lo:.2f}–{hi:.2f} | {correct / max(reference, 1):.3f} | "
              f"{m.get('first_token_agreement', float('nan')):.3f} | {m.get('next_token_agreement', float('nan')):.3f}"
              f" | {m.get('ppl_ratio', float('nan')):.4f} | {facts['size_mb']:.1f} | "
              f"{m.get('decode_tok_s', float('nan')):.1f} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
