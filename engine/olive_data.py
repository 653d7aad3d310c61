"""Olive user script (the `user_script` of a fine-tune's Olive data config): a pre-process component that tokenizes
chat rows exactly as our backend does — the chat template rendered turn by turn, the loss only on the assistant's
replies (engine.data.encode_example) — where Olive's own text-generation pre-process trains on the whole rendered
text, prompt included. Olive imports this file by path in its own process; the repository root goes on sys.path
so the tokenization is the engine's own, not a copy."""
from __future__ import annotations

import sys
from pathlib import Path

from olive.data.registry import Registry

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from engine.olive import PRE_PROCESS  # noqa: E402  (light: the standard library only)


@Registry.register_pre_process(PRE_PROCESS)
def slmops_chat_pre_process(dataset, model_name: str, max_seq_len: int = 1024, max_samples: int | None = None,
                            message_col: str = "messages", trust_remote_code: bool | None = None, **_):
    """Each row's conversation as input ids, attention mask and labels (-100 outside the assistant's replies), cut
    to max_seq_len; rows with nothing left to train on are dropped, as our backend drops them."""
    from datasets import Dataset
    from olive.data.component.dataset import ClassificationDataset
    from transformers import AutoTokenizer

    from engine.data import encode_example

    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=bool(trust_remote_code))
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for messages in dataset[message_col][:max_samples]:
        encoded = encode_example(tokenizer, messages, max_seq_len)
        if any(label != -100 for label in encoded["labels"]):
            for key in rows:
                rows[key].append(encoded[key])
    data = Dataset.from_dict(rows)
    data.set_format("torch", output_all_columns=True)
    return ClassificationDataset(data, "labels")
