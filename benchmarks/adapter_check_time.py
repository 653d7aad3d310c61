"""An adapter export's check (engine.export_verify.verify_adapter) as it was — the transformers replies generated
one example at a time — and as it is now, batched, on the same adapter, export and examples in one process:
seconds and results (they must be equal).

    python benchmarks/adapter_check_time.py --home WORKSPACE --export EXPORT --adapter NAME [--threads 2]

WORKSPACE holds EXPORT (made with adapters), the adapter NAME and its merged model NAME-merged (the fine-tune's
merge), e.g. the workspace of benchmarks/adapter_set.py. The old loop is kept here, for this comparison only."""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_at_a_time(ctx, og_view, source_dir: Path, examples: list, mode: str, max_new_tokens: int) -> dict:
    """verify_adapter before it batched the transformers replies (commit 18de581)."""
    import numpy as np
    import torch

    from engine.loading import load_causal_lm
    from engine.scoring import matches, pick_mode

    lm, tokenizer = load_causal_lm(source_dir)
    eos = og_view.eos_ids
    refs = [ref for _, ref in examples if ref is not None]
    mode = pick_mode(refs, mode)
    agree = total = source_ok = export_ok = 0
    for prompt, ref in examples:
        ids = og_view.prompt_ids(prompt)
        with torch.inference_mode():
            out = lm.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                              top_k=None, pad_token_id=next(iter(eos)))
        reply = out[0, len(ids):].tolist()
        reply = reply[:next((j + 1 for j, t in enumerate(reply) if t in eos), len(reply))]
        if reply:
            logits = og_view.logits(ids + reply)
            picked = logits[len(ids) - 1:len(ids) - 1 + len(reply)].argmax(axis=1)
            agree += int((picked == np.asarray(reply)).sum())
            total += len(reply)
        if ref is not None:
            source_text = tokenizer.decode([t for t in reply if t not in eos], skip_special_tokens=True).strip()
            export_text = og_view.decode(og_view.generate_ids(ids, max_new_tokens)[0]).strip()
            source_ok += matches(source_text, ref, mode)
            export_ok += matches(export_text, ref, mode)
    out = {"adapter": og_view.adapter, "examples": len(examples), "greedy_agreement": agree / max(total, 1),
           "tokens": total}
    if refs:
        out.update(mode=mode, source_score=source_ok / len(refs), export_score=export_ok / len(refs))
    return out


class QuietContext:
    def check_cancelled(self):
        pass

    def stage(self, _text):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--export", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from engine import Engine, Settings
    from engine.export_verify import adapter_examples, verify_adapter
    from engine.ort_genai import OgModel

    torch.set_num_threads(args.threads)
    engine = Engine(Settings(home=args.home, offline=True))
    examples, mode, max_new = adapter_examples(engine.store, engine.get_model(args.adapter), 200)
    view = OgModel(engine.get_model(args.export).path, threads=args.threads).with_adapter(args.adapter)
    source = Path(engine.get_model(f"{args.adapter}-merged").path)
    results = {}
    for name, check in (("one at a time (before)", one_at_a_time), ("batched (now)", verify_adapter)):
        t0 = time.perf_counter()
        result = check(QuietContext(), view, source, examples, mode, max_new)
        results[name] = {k: v for k, v in result.items() if k != "score_kept"}
        print(f"{name}: {time.perf_counter() - t0:.1f} s  {results[name]}", flush=True)
    print("same results:", len({str(r) for r in results.values()}) == 1)


if __name__ == "__main__":
    main()
