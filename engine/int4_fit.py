"""A calibrated 4-bit fit (GPTQ with Q4_1 blocks) for weights that min/max rounding would spoil.

Min/max rounding (llama.cpp's Q4_1, the affine export's default) is exact for weights already on a Q4_1 grid, but a
model trained after it was rounded — a merged fine-tune, a distilled student — carries its training in changes far
smaller than a 4-bit step, and rounding to the nearest code snaps them back: the export answers like the model
before training. GPTQ (Frantar et al., 2022) chooses the codes column by column and spreads each column's rounding
error over the columns still to come, weighted by the inverse Hessian of the layer's inputs on calibration data, so
the layer's *outputs* on that data stay close to the original's.

The fit writes its result as ordinary weights on the grid: each block of 32 along a row is d·q + m with q in 0..15,
and the block's smallest and largest values take codes 0 and 15, so min/max rounding of the fitted weights (the
affine export) recovers exactly these codes — the fitted model exports through the same fused kernel, bit for bit.
"""
from __future__ import annotations

import time


def linear_layers(model) -> list[tuple[str, object]]:
    """The decoder's weight matrices (torch.nn.Linear inside model.model.layers): what the export stores in 4 bits.
    The embedding and the head stay as they are (8-bit in the export)."""
    import torch

    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name]


def input_hessians(model, batches, check=lambda: None) -> dict[str, object]:
    """H = 2·XᵀX / n over the calibration tokens X that reach each decoder Linear (padding excluded).
    `batches`: (input_ids, attention_mask) tensors."""
    import torch

    layers = linear_layers(model)
    sums = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in layers}
    counts = dict.fromkeys(sums, 0)
    current = {}

    def hook(module, inputs, _output, name):
        x = inputs[0]
        keep = current["mask"].reshape(-1).bool()
        x = x.reshape(-1, x.shape[-1])[keep].double()
        sums[name] += x.T @ x
        counts[name] += x.shape[0]

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name)) for name, m in layers]
    try:
        with torch.inference_mode():
            for ids, mask in batches:
                check()
                current["mask"] = mask
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {name: (2 * sums[name] / max(counts[name], 1)).float() for name in sums}


def gptq_q41(weight, hessian, group: int = 32, damp: float = 0.01, blocksize: int = 128):
    """GPTQ of a [N, K] weight with Q4_1 blocks of `group` along K; returns the fitted weights (on the grid).
    Each block's grid (offset m = its minimum, step d = range / 15) is taken from the block's values, error-updated,
    when GPTQ reaches it; the block's smallest and largest values are pinned to codes 0 and 15 so the grid can be
    read back from the weights."""
    import torch

    w = weight.detach().clone().float()
    h = hessian.clone().float()
    n, k = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    fitted = torch.zeros_like(w)
    rows = torch.arange(n)
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        w1 = w[:, i1:i2].clone()
        err = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:  # a new Q4_1 block: its grid from its current values
                block = w1[:, i:i + group]
                lo, hi = block.min(1).values, block.max(1).values
                step = torch.where(hi > lo, (hi - lo) / 15.0, torch.ones_like(lo))
                first, last = i + block.argmin(1), i + block.argmax(1)
            codes = torch.clamp(torch.round((w1[:, i] - lo) / step), 0, 15)
            codes = torch.where(first == i, torch.zeros_like(codes), codes)
            codes = torch.where((last == i) & (hi > lo), torch.full_like(codes, 15.0), codes)
            q = codes * step + lo
            fitted[rows, i1 + i] = q
            e = (w1[:, i] - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err[:, i] = e
        w[:, i2:] -= err @ hinv[i1:i2, i2:]
    return fitted


def output_error(weight, approx, hessian) -> float:
    """tr((W−Ŵ) H (W−Ŵ)ᵀ): the squared output error of Ŵ in place of W on the calibration inputs."""
    import torch

    d = (weight - approx).double()
    return float(torch.einsum("nk,kl,nl->", d, hessian.double(), d))


def fit_model(model, batches, group: int = 32, log=print, check=lambda: None) -> dict:
    """Replace every decoder weight matrix of `model` with its GPTQ Q4_1 fit on the calibration `batches`
    ((input_ids, attention_mask) tensors). All Hessians come from one pass of the original model. Returns facts:
    matrices, calibration tokens, seconds, and the output error on the calibration data relative to min/max
    rounding's (mean over matrices; < 1 is better)."""
    import torch

    from .block_quant import round_affine_4bit

    t0 = time.perf_counter()
    hessians = input_hessians(model, batches, check)
    tokens = int(sum(int(mask.sum()) for _, mask in batches))
    ratios = []
    layers = linear_layers(model)
    with torch.no_grad():
        for i, (name, module) in enumerate(layers):
            check()
            w, h = module.weight.float(), hessians[name]
            fitted = gptq_q41(w, h, group)
            rounded = torch.from_numpy(round_affine_4bit(w.T.numpy(), group).T.copy())

            base = output_error(w, rounded, h)
            ratios.append(output_error(w, fitted, h) / base if base > 0 else 1.0)
            module.weight.copy_(fitted.to(module.weight.dtype))
            if (i + 1) % 20 == 0:
                log(f"calibrated int4: fitted {i + 1}/{len(layers)} weight matrices")
    return {"matrices": len(layers), "calibration_tokens": tokens, "seconds": time.perf_counter() - t0,
            "output_error_vs_minmax": sum(ratios) / max(len(ratios), 1)}


def off_grid_share(folder, group: int = 32) -> float:
    """Share of the 4-bit blocks of the decoder weight matrices in an HF folder that are not on a d·q + m grid
    (0 for weights read from a Q4_1 GGUF; nearly 1 for weights trained after that)."""
    from pathlib import Path

    from safetensors import safe_open

    from .block_quant import affine_codes, step_errors

    off = total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if ".layers." not in key or not key.endswith(".weight"):
                    continue
                w = f.get_tensor(key)
                if w.ndim != 2 or w.shape[1] % group:
                    continue
                err = step_errors(*affine_codes(w.float().numpy(), group))
                off += int((err >= 1e-3).sum())
                total += err.size
    return off / total if total else 0.0


def training_data(store, model) -> str | None:
    """The data file the model, or its nearest ancestor made by training, was trained or distilled on — if the
    file is still there (a fine-tune's train_path, a student's stage-1 dataset)."""
    import json
    from pathlib import Path

    seen, current = set(), model
    while current is not None and current.id not in seen:
        seen.add(current.id)
        if current.run_id is not None:
            run = store.get_run(current.run_id)
            if run.kind == "adapter_set":  # the set's own train_path is empty: the adapter's row has it
                from .training import finetune_config_of

                path = finetune_config_of(store, current).train_path
            else:
                path = json.loads(run.config_json).get("train_path")
            if path and Path(path).is_file():
                return path
        parent = current.parent_id
        current = store.get_model(parent) if parent and store.has_model(parent) else None
    return None


def calibration_batches(path: str, tokenizer, count: int, max_length: int = 256, batch: int = 8) -> list:
    """(input_ids, attention_mask) batches of the first `count` examples of a dataset file (chat rows through the
    model's chat template, as it was trained on them; text rows as they are), right-padded."""
    import torch

    from .data import detect_shape, encode_example, read_dataset, to_conversation

    ds = read_dataset(path)
    shape, mapping = detect_shape(ds.column_names)
    rows = [encode_example(tokenizer, to_conversation(ds[i], shape, mapping), max_length)["input_ids"]
            for i in range(min(count, len(ds)))]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        width = max(len(r) for r in chunk)
        out.append((torch.tensor([r + [pad] * (width - len(r)) for r in chunk]),
                    torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk])))
    return out
