"""The standard text for perplexity: English prose that ships with Python itself (`pydoc_data.topics`), so nobody
on this project wrote it and every machine has the same copy. A fixed slice, scored in non-overlapping windows."""
from __future__ import annotations


def standard_text(max_chars: int = 400_000) -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))[:max_chars]


def standard_text_nll(model, tokenizer, n_tokens: int = 4096, window: int = 512) -> float:
    """Mean NLL per token over the first `n_tokens` tokens of the standard text, `window` tokens at a time."""
    import torch

    ids = tokenizer(standard_text(), add_special_tokens=False)["input_ids"][:n_tokens]
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = torch.tensor([ids[start:start + window]])
            if chunk.shape[1] < 2:
                break
            loss = model(input_ids=chunk, labels=chunk).loss
            total += float(loss) * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    return total / max(count, 1)
