"""Training throughput of our fine-tune job against a plain peft + Trainer script, same data and settings, one run.

Usage: .venv/bin/python benchmarks/finetune_throughput.py [--steps 30] [--home DIR]
Both sides fine-tune the bundled SmolLM2 with LoRA (r 8, q/v) on the example dataset, batch 4, max length 128,
for the same number of steps. Ours runs as a real run (worker process, store reporting, callbacks); the baseline
is a fresh process with Trainer and peft and nothing else. Both count non-padding tokens from the start of
training to the end of the last step. Rounds alternate the two; prints tokens/s of each and the ratio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"
EVAL = ROOT / "assets" / "datasets" / "request_to_json.eval.jsonl"

# The baseline: plain transformers + peft, written the way their docs show it. Tokenization uses the chat template
# with the same prompt masking so both sides train on identical token counts.
BASELINE = r'''
import json, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)
from datasets import Dataset
model_dir, train_path, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
set_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
rows = []
for line in open(train_path, encoding="utf-8"):
    msgs = json.loads(line)["messages"]
    prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(msgs, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"][:128]
    rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                 "labels": [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]})
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                         task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, max_steps=steps, learning_rate=2e-4,
                         logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
                         disable_tqdm=True, include_num_input_tokens_seen="non_padding", seed=42, data_seed=42)
class Clock(TrainerCallback):  # the same window our job reports: start of training to the end of the last step
    def on_train_begin(self, args, state, control, **kw): self.t0 = time.perf_counter()
    def on_step_end(self, args, state, control, **kw): self.seconds = time.perf_counter() - self.t0
clock = Clock()
trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), callbacks=[clock],
                  data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100,
                                                       pad_to_multiple_of=8))
trainer.train()
print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "seconds": clock.seconds}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--home", type=Path, default=None, help="workspace with the default model (else a new one)")
    args = parser.parse_args()

    from engine import DEFAULT_MODEL_ID, Engine, FineTuneConfig, Settings

    home = args.home or Path(tempfile.mkdtemp(prefix="slmops-ftbench-")) / "ws"
    engine = Engine(Settings(home=home, offline=True))
    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id)
    model = engine.get_model(DEFAULT_MODEL_ID)

    # all 400 rows train on both sides (the eval file is separate); no eval or checkpoint inside the window
    config = FineTuneConfig(model_id=DEFAULT_MODEL_ID, train_path=str(TRAIN), eval_path=str(EVAL),
                            max_steps=args.steps, eval_steps=10_000, save_steps=10_000, eval_max_examples=0,
                            learning_rate=2e-4)

    def ours() -> float:
        run = engine.wait_run(engine.start_run(config))
        assert run.status.value == "succeeded", run.error
        return run.summary["train_tokens_per_s"]

    def plain() -> float:
        with tempfile.TemporaryDirectory() as out:
            result = subprocess.run([sys.executable, "-c", BASELINE, model.path, str(TRAIN), str(args.steps), out],
                                    capture_output=True, text=True, check=True)
        base = json.loads(result.stdout.strip().splitlines()[-1])
        return base["tokens"] / base["seconds"]

    rows = []
    for _ in range(args.rounds):  # interleaved, so drifts of this noisy machine hit both sides alike
        rows.append((ours(), plain()))
    print(f"steps: {args.steps}, batch 4, max length 128, LoRA r 8 on q/v, bundled {DEFAULT_MODEL_ID}")
    print(f"{'round':<8}{'ours tok/s':>12}{'plain tok/s':>13}{'ratio':>8}")
    for i, (a, b) in enumerate(rows, 1):
        print(f"{i:<8}{a:>12.1f}{b:>13.1f}{a / b:>8.3f}")
    total_a, total_b = sum(a for a, _ in rows), sum(b for _, b in rows)
    print(f"ratio ours / plain over all rounds: {total_a / total_b:.3f}")


if __name__ == "__main__":
    main()
