"""Training throughput of our fine-tune job against a plain peft + Trainer script, same data and settings, one run.

Usage: .venv/bin/python benchmarks/finetune_throughput.py [--steps 30] [--home DIR]
Both sides fine-tune the bundled SmolLM2 with LoRA (r 8, q/v) on the example dataset, batch 4, max length 128,
for the same number of steps. Ours runs as a real run (worker process, store reporting, callbacks); the baseline
is a fresh process with Trainer and peft and nothing else. Prints train tokens/s of each and the ratio.
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

# The baseline: plain transformers + peft, written the way their docs show it. Tokenization uses the chat template
# with the same prompt masking so both sides train on identical token counts.
BASELINE = r'''
import json, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                          TrainingArguments, set_seed)
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
trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                  data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100,
                                                       pad_to_multiple_of=8))
t0 = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - t0
print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "seconds": seconds}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--home", type=Path, default=None, help="workspace with the default model (else a new one)")
    args = parser.parse_args()

    from engine import DEFAULT_MODEL_ID, Engine, FineTuneConfig, Settings

    home = args.home or Path(tempfile.mkdtemp(prefix="slmops-ftbench-")) / "ws"
    engine = Engine(Settings(home=home, offline=True))
    model = engine.ensure_default_model()
    if model.run_id and not model.ready:
        engine.wait_run(model.run_id)
    model = engine.get_model(DEFAULT_MODEL_ID)

    config = FineTuneConfig(model_id=DEFAULT_MODEL_ID, train_path=str(TRAIN), eval_ratio=0.05, max_steps=args.steps,
                            eval_steps=10_000, save_steps=10_000, eval_max_examples=0, learning_rate=2e-4,
                            output_name=None)
    run = engine.wait_run(engine.start_run(config))
    assert run.status.value == "succeeded", run.error
    ours = run.summary["train_tokens_per_s"]

    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", BASELINE, model.path, str(TRAIN), str(args.steps), out],
                                capture_output=True, text=True, check=True)
    base = json.loads(result.stdout.strip().splitlines()[-1])
    plain = base["tokens"] / base["seconds"]
    print(f"steps: {args.steps}, batch 4, max length 128, LoRA r 8 on q/v, bundled {DEFAULT_MODEL_ID}")
    print(f"{'':<28}{'train tokens/s':>16}")
    print(f"{'SLMOps finetune job':<28}{ours:>16.1f}")
    print(f"{'plain peft + Trainer':<28}{plain:>16.1f}")
    print(f"ratio ours / plain: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
