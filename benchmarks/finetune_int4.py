"""Does the int4 export of a LoRA fine-tune still do the fine-tune's task?

    python benchmarks/finetune_int4.py [--home DIR] [--model NAME] [--limit 100] [--threads 2]

1. Fine-tunes the bundled model with LoRA (the fine-tune job's defaults: r 8 on q_proj, v_proj, 2 epochs) on the
   bundled request → JSON task and merges it (skipped when the workspace already has `ft-json-merged`).
2. Exports the merged model with the engine's own quantize job: fp32 (the reference), the default int4 (affine, fused
   kernel, fine_tune_delta auto), and with fine_tune_delta off the merged weights themselves — by the calibrated
   fit (fit gptq, on the fine-tune's training data) and by min/max rounding (fit minmax, the behaviour before the
   delta path). min_agreement 0 so every export is kept and scored.
3. Scores each export with the engine's evaluate job on the bundled request_to_json task (greedy, JSON-equal, on
   onnxruntime-genai), and prints the task score with its 95 % Wilson interval, the score relative to fp32, and each
   export's verify figures (perplexity ratio and next-token agreement on 4,096 tokens of Python's documentation,
   first-token agreement on 16 chat prompts), size and decode speed as its quantize run measured them.
"""
from __future__ import annotations

import argparse
import sys
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
    return {"id": model.id, "size_mb": model.size_bytes / 1e6, "summary": run.summary, "metrics": metrics}


def score(engine, model_id: str, limit: int, threads: int) -> dict:
    """The evaluate job's summary for one export on the bundled task (the same scoring as `python -m engine eval`)."""
    from engine import EvaluateConfig

    config = EvaluateConfig(model_id=model_id, task="request_to_json", limit=limit, backend="onnx", threads=threads)
    run = engine.wait_run(engine.start_run(config), timeout=3600)
    assert run.status.value == "succeeded", run.error
    return run.summary


def main() -> int:
    from engine import Engine, Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/slmops-bench-finetune-int4", help="workspace (models are kept here)")
    ap.add_argument("--limit", type=int, default=100, help="held-out examples scored")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="a registered merged LoRA fine-tune of the bundled model on the "
                    "task (default: make ft-json-merged)")
    args = ap.parse_args()
    engine = Engine(Settings(home=Path(args.home), offline=True))
    model_id = args.model or fine_tune(engine, args.threads)
    exports = {"fp32": export(engine, model_id, "fp32", args.threads, precision="fp32"),
               "int4 (default: affine, fused, fine_tune_delta auto)": export(engine, model_id, "int4", args.threads),
               "int4 (fine_tune_delta off, fit gptq: merged weights, calibrated fit)": export(
                   engine, model_id, "int4-gptq", args.threads, fine_tune_delta="off", fit="gptq"),
               "int4 (fine_tune_delta off, fit minmax: merged weights rounded)": export(
                   engine, model_id, "int4-nodelta", args.threads, fine_tune_delta="off", fit="minmax")}
    print(f"{model_id}: held-out examples of request_to_json, greedy, JSON-equal, {args.threads} threads, each "
          "export scored by the evaluate job")
    print("| export | task score | 95 % interval | × fp32 | first-token agreement | next-token agreement | "
          "PPL × source | MB | decode tok/s | scoring s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = None
    for label, facts in exports.items():
        result = score(engine, facts["id"], args.limit, args.threads)
        reference = reference or result["score"]
        m = facts["metrics"]
        print(f"| {label} | {result['passed']}/{result['examples']} | {result['ci_low']:.2f}–{result['ci_high']:.2f}"
              f" | {result['score'] / max(reference, 1e-9):.3f} | {m.get('first_token_agreement', float('nan')):.3f}"
              f" | {m.get('next_token_agreement', float('nan')):.3f} | {m.get('ppl_ratio', float('nan')):.4f} | "
              f"{facts['size_mb']:.1f} | {m.get('decode_tok_s', float('nan')):.1f} | {result['scoring_s']:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
