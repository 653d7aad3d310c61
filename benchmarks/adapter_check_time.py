"""An adapter export's check (engine.export_verify.verify_adapter) as it was — the transformers replies generated
one example at a time — and as it is now, batched, on the same adapter, export and examples in one process:
seconds and results (they must be equal).

    python benchmarks/adapter_check_time.py --home WORKSPACE --export EXPORT --adapter NAME [--threads 2]

WORKSPACE holds EXPORT (made with adapters), the adapter NAME and its merged model NAME-merged (the fine-tune's
merge), e.g. the workspace of benchmarks/adapter_set.py. The old way of generating the replies is kept here, for
this comparison only; the rest of the check is the engine's own."""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_at_a_time(lm, prompts: list[list[int]], max_new_tokens: int, pad_id: int, stop_ids: set[int],
                  **_batching) -> list[list[int]]:
    """engine.scoring.greedy_ids as verify_adapter had it before it batched the replies (commit 18de581)."""
    import torch

    replies = []
    for ids in prompts:
        with torch.inference_mode():
            out = lm.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                              top_k=None, pad_token_id=pad_id)
        reply = out[0, len(ids):].tolist()
        replies.append(reply[:next((j + 1 for j, t in enumerate(reply) if t in stop_ids), len(reply))])
    return replies


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

    from engine import Engine, Settings, scoring
    from engine.export_verify import adapter_examples, verify_adapter
    from engine.ort_genai import OgModel

    torch.set_num_threads(args.threads)
    engine = Engine(Settings(home=args.home, offline=True))
    examples, mode, max_new = adapter_examples(engine.store, engine.get_model(args.adapter), 200)
    view = OgModel(engine.get_model(args.export).path, threads=args.threads).with_adapter(args.adapter)
    source = Path(engine.get_model(f"{args.adapter}-merged").path)
    results = {}
    batched = scoring.greedy_ids
    for name, greedy_ids in (("one at a time (before)", one_at_a_time), ("batched (now)", batched)):
        scoring.greedy_ids = greedy_ids  # verify_adapter imports it from engine.scoring when called
        t0 = time.perf_counter()
        result = verify_adapter(QuietContext(), view, source, examples, mode, max_new)
        results[name] = {k: v for k, v in result.items() if k != "score_kept"}
        print(f"{name}: {time.perf_counter() - t0:.1f} s  {results[name]}", flush=True)
    print("same results:", len({str(r) for r in results.values()}) == 1)


if __name__ == "__main__":
    main()
