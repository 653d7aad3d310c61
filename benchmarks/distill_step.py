"""Seconds per distillation training step, two ways of computing the loss interleaved on the same batches:

- `full`: both heads on every position, then the response mask (the loss as it was first);
- `response`: the heads only where a response token is predicted, the teacher run every step (`teacher_top_k 0`);
- `cached`: the teacher's top-k answer computed once before training (`teacher_top_k K`, the job's default);
  the seconds that computing it took are printed too, per example.

    python benchmarks/distill_step.py --home DIR --teacher NAME --data FILE [--compare response,cached] [--top-k 64]

Each computes α·T²·KL(teacher‖student) + (1−α)·CE on the response tokens (`full` and `response` give the same
number; `cached` the KL with the teacher's other tokens merged — both printed, with the teacher's mean probability
outside its top k), with a student of the teacher's layers, batches of 8 from the data file (right-padded to a
multiple of 8, as the Trainer's collator does), an AdamW step after each backward. Each round times `--steps` steps
of each variant in turn; the medians over rounds are printed with the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def full_logits_loss(student, teacher, batch, alpha: float, t: float):
    """The loss as the distill job computed it before: both heads on every position, then the response mask."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = labels[:, 1:] != -100
    s, tl = out.logits[:, :-1][mask] / t, t_logits[:, :-1][mask] / t
    kd = F.kl_div(F.log_softmax(s, -1), F.log_softmax(tl, -1), log_target=True, reduction="batchmean") * t * t
    return alpha * kd + (1 - alpha) * out.loss


def main() -> int:
    import torch
    from transformers import DataCollatorForSeq2Seq

    from engine import Engine, Settings
    from engine.data import detect_shape, encode_example, read_dataset, to_conversation
    from engine.distill import derive_student, make_distill_trainer, teacher_top_k
    from engine.loading import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--teacher", required=True, help="a registered full model")
    ap.add_argument("--data", required=True, help="chat data (e.g. a stage-1 dataset)")
    ap.add_argument("--layers", default="0,1,8,10,11,15,20,24,27,29")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", default="response,cached", help="two of full, response, cached")
    ap.add_argument("--top-k", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(Settings(home=Path(args.home), offline=True))
    path = engine.get_model(args.teacher).path
    tokenizer = load_tokenizer(path, pad=True)
    teacher = load_model(path).eval()
    ds = read_dataset(args.data)
    shape, mapping = detect_shape(ds.column_names)
    rows = [encode_example(tokenizer, to_conversation(ds[i], shape, mapping), 160) for i in range(8 * args.steps)]
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=8)
    batches = [collate([{k: r[k] for k in ("input_ids", "labels", "attention_mask")} for r in rows[i:i + 8]])
               for i in range(0, len(rows), 8)]
    layers = [int(x) for x in args.layers.split(",")]
    t0 = time.perf_counter()
    cache = teacher_top_k(teacher, [(b["input_ids"], b["attention_mask"], b["labels"]) for b in batches], args.top_k,
                          2.0)
    cache_s = (time.perf_counter() - t0) / len(rows)
    tail = sum(float(v[2].exp().sum()) for v in cache.values()) / sum(len(v[2]) for v in cache.values())

    def job_loss(use_cache):
        trainer_cls = make_distill_trainer(teacher, 0.5, 2.0, cache if use_cache else None)
        trainer = trainer_cls.__new__(trainer_cls)  # compute_loss needs only its loss-parts log
        trainer._parts = {"kd_loss": [], "ce_loss": []}
        return lambda m, b: trainer.compute_loss(m, b)

    every = {"full": ("head on every position", lambda m, b: full_logits_loss(m, teacher, b, 0.5, 2.0)),
             "response": ("teacher every step", job_loss(False)),
             "cached": (f"teacher's top-{args.top_k} cached", job_loss(True))}
    variants = dict(every[name.strip()] for name in args.compare.split(","))
    students = {name: derive_student(teacher, layers).train() for name in variants}
    optims = {name: torch.optim.AdamW(students[name].parameters(), lr=1e-5) for name in variants}
    with torch.no_grad():
        a, b = (loss_fn(students[n], batches[0]) for n, loss_fn in variants.items())
    print(f"loss on the first batch: {float(a):.5f} vs {float(b):.5f}; the teacher's mean probability outside its "
          f"top {args.top_k} at T=2: {tail:.5f}; its answers cached in {cache_s:.3f} s per example")
    times = {name: [] for name in variants}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, loss_fn in variants.items():
            t0 = time.perf_counter()
            for batch in batches:
                loss_fn(students[name], batch).backward()
                optims[name].step()
                optims[name].zero_grad()
            times[name].append((time.perf_counter() - t0) / len(batches))
    response = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    positions = sum(b["labels"].numel() for b in batches)
    print(f"{args.teacher} → student of layers {layers}; batches of 8, {response / positions:.0%} of positions "
          f"predict a response token; {args.threads} threads; median of {args.rounds} interleaved rounds × "
          f"{len(batches)} steps")
    medians = {name: statistics.median(v[1:]) for name, v in times.items()}
    for name, seconds in medians.items():
        print(f"{name:<32} {seconds:.3f} s/step")
    first, second = medians.values()
    print(f"speed-up: {first / second:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
