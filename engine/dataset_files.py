"""Browsing and editing the chat datasets that runs wrote into the workspace (`<workspace>/datasets/*.jsonl`)."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from .errors import InvalidInput


def own_dataset(home: Path, path: str) -> Path:
    """`path` resolved, when it is an existing dataset file of this workspace; else InvalidInput."""
    target = Path(path).resolve()
    if not target.is_relative_to(home / "datasets") or not target.is_file():
        raise InvalidInput(f"{path} is not a dataset of this workspace.")
    return target


def read_rows(target: Path, limit: int) -> list[dict]:
    rows = []
    with open(target, encoding="utf-8") as fh:
        for line in itertools.islice(fh, limit):
            messages = json.loads(line)["messages"]
            rows.append({"prompt": messages[-2]["content"], "response": messages[-1]["content"]})
    return rows


def write_rows(target: Path, rows: list[dict]) -> int:
    """Replace the file with the (prompt, response) pairs (written aside, then renamed); empty sides are dropped."""
    kept = [r for r in rows if str(r.get("prompt", "")).strip() and str(r.get("response", "")).strip()]
    if not kept:
        raise InvalidInput("Every row is empty: nothing to save (the dataset is unchanged).")
    tmp = target.with_suffix(".partial")
    tmp.write_text("".join(json.dumps({"messages": [{"role": "user", "content": str(r["prompt"])},
                                                    {"role": "assistant", "content": str(r["response"])}]},
                                      ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(target)
    return len(kept)
