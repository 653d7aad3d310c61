#!/usr/bin/env bash
# The GPU paths on a CUDA machine (the device tool's H200 when one is lent; CI has no GPU): the fine-tune and
# distillation tests (LoRA, full, QLoRA on a 4-bit base, the KD trainer with its teacher beside the student) with
# their models on the GPU. Run from the project root with the project's Python packages importable:
#   bash benchmarks/device_check.sh [pytest args]
set -uo pipefail
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
python3 - <<'PY' || exit 1
import importlib
for name in ("torch", "transformers", "peft", "accelerate", "datasets", "pyarrow", "bitsandbytes"):
    module = importlib.import_module(name)
    print(f"{name} {module.__version__}", end="; ")
import torch
print(f"\ncuda: {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
from engine.training import qlora_unavailable_reason
print("qlora:", qlora_unavailable_reason() or "available")
PY
export PYTHONUNBUFFERED=1 SLMOPS_OFFLINE=1 HF_HUB_OFFLINE=1
python3 -m pytest -p no:cacheprovider -q --durations=20 tests/test_finetune.py tests/test_distill.py \
  -k "not olive and not real and not bundled" "$@"
