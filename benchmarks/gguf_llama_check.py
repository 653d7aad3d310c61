"""Our Q4_1 GGUF export of the bundled model read by llama.cpp, next to the shipped GGUF it was converted from.

    python benchmarks/gguf_llama_check.py [--home DIR] [--threads 2] [--new-tokens 64] [--ppl-tokens 4096]

The export is made by the engine's own `gguf` job (bundled model → safetensors → our writer, Q4_1) when the
workspace lacks it. Then, in one process with llama-cpp-python (its version and `llama_print_system_info()` printed):
  - the files: tensor types and bytes compared tensor by tensor, and the metadata keys that differ;
  - tokenization: llama.cpp's tokenizer of each file on the chat prompts and the standard text (same ids?);
  - greedy text: each chat prompt (the chat template rendered once by transformers, tokenized by each file's own
    tokenizer), up to --new-tokens tokens or EOS, from both files (same tokens?);
  - perplexity: the first --ppl-tokens tokens of the standard text in 512-token windows, logits from llama.cpp.
Needs llama-cpp-python (`pip install llama-cpp-python`, builds llama.cpp from source).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine, GgufConfig, Settings  # noqa: E402
from engine.eval_text import standard_text, token_nll, windows  # noqa: E402
from engine.export_verify import CHECK_PROMPT, agreement_prompts  # noqa: E402

OUTPUT = "check-gguf-q4_1"


def ensure_export(engine) -> tuple[str, Path]:
    """(the bundled model's safetensors folder, our Q4_1 GGUF file), made once per workspace by the gguf job."""
    from engine.loading import GGUF_FILE

    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id, timeout=900)
    if not engine.store.has_model(OUTPUT):
        print(f"exporting {OUTPUT} …", file=sys.stderr, flush=True)
        run = engine.wait_run(engine.start_run(GgufConfig(model_id=model.id, output_name=OUTPUT)), timeout=1800)
        assert run.status.value == "succeeded", run.error
        print(f"gguf job run {run.id}: {json.dumps(run.summary)}", flush=True)
    return engine.get_model(model.id).path, Path(engine.get_model(OUTPUT).path) / GGUF_FILE


def compare_files(shipped: Path, ours: Path) -> dict:
    from gguf import GGUFReader

    a, b = GGUFReader(str(shipped)), GGUFReader(str(ours))
    theirs = {t.name: t for t in a.tensors}
    same = [t.name for t in b.tensors if t.name in theirs and t.tensor_type == theirs[t.name].tensor_type
            and np.array_equal(np.asarray(t.data), np.asarray(theirs[t.name].data))]
    keys = sorted(set(a.fields) | set(b.fields))
    differ = [k for k in keys if k not in a.fields or k not in b.fields
              or (not k.startswith("GGUF.") and a.fields[k].contents() != b.fields[k].contents())]
    return {"tensors": len(b.tensors), "tensors_shipped": len(a.tensors), "tensors_identical": len(same),
            "metadata_keys_differing": differ}


def llama(path: Path, threads: int):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=2048, logits_all=True,
                 verbose=False)


def greedy(llm, ids: list[int], n: int) -> list[int]:
    out = []
    llm.reset()
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if token == llm.token_eos() or len(out) >= n:
            break
        out.append(token)
    return out


def perplexity(llm, ids: list[int]) -> float:
    total, count = 0.0, 0
    for w in windows(ids, 512):
        llm.reset()
        llm.eval(w)
        logits = np.asarray(llm.scores[:len(w) - 1], dtype=np.float64)
        total += token_nll(logits, w[1:])
        count += len(w) - 1
    return float(np.exp(total / count))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/slmops-bench-gguf", help="workspace (the export is made here once)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import llama_cpp
    from transformers import AutoTokenizer

    from engine.models import bundled_gguf_path

    engine = Engine(Settings(home=Path(args.home), offline=True))
    hf, ours = ensure_export(engine)
    engine.close()
    shipped = bundled_gguf_path()
    result = {"llama_cpp_python": llama_cpp.__version__,
              "llama_system_info": llama_cpp.llama_print_system_info().decode().strip(),
              "threads": args.threads, "shipped": str(shipped), "ours": str(ours),
              "files": compare_files(shipped, ours)}
    print(f"llama.cpp (llama-cpp-python {result['llama_cpp_python']}): {result['llama_system_info']}")
    print(f"files: {json.dumps(result['files'])}")

    tok = AutoTokenizer.from_pretrained(hf)
    prompts = [CHECK_PROMPT] + agreement_prompts()
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                for p in prompts]
    text = standard_text(60_000)
    models = {"shipped": llama(shipped, args.threads), "ours": llama(ours, args.threads)}
    ids = {name: [llm.tokenize(r.encode(), add_bos=False, special=True) for r in rendered]
           for name, llm in models.items()}
    text_ids = {name: llm.tokenize(text.encode(), add_bos=False)[:args.ppl_tokens] for name, llm in models.items()}
    result["same_tokenization"] = ids["shipped"] == ids["ours"] and text_ids["shipped"] == text_ids["ours"]
    replies = {name: [greedy(llm, p, args.new_tokens) for p in ids["shipped"]] for name, llm in models.items()}
    same = [x == y for x, y in zip(replies["shipped"], replies["ours"])]
    result["greedy_identical"] = f"{sum(same)}/{len(same)} prompts"
    result["greedy_tokens"] = sum(len(r) for r in replies["ours"])
    result["answer"] = {name: models[name].detokenize(replies[name][0]).decode(errors="replace").strip()
                        for name in models}
    result["perplexity"] = {name: round(perplexity(llm, text_ids["shipped"]), 4) for name, llm in models.items()}
    result["ppl_tokens"] = len(text_ids["shipped"])
    for key in ("same_tokenization", "greedy_identical", "greedy_tokens", "answer", "perplexity", "ppl_tokens"):
        print(f"{key}: {result[key]}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    ok = result["same_tokenization"] and all(same) and \
        result["perplexity"]["shipped"] == result["perplexity"]["ours"]
    print("llama.cpp reads our Q4_1 GGUF as it reads the shipped one" if ok else "DIFFERENT: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
