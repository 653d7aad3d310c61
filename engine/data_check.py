"""Validation of a dataset before a job starts: every problem found with its row numbers, token length statistics
against the max length, and a preview of examples as the model sees them (trained-on part marked)."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from .data import (IGNORE_INDEX, ROLES, SHAPE_FIELDS, DatasetShape, detect_shape, read_dataset,
                   row_list, to_conversation, tokenize_marked, truncate_marked)
from .errors import InvalidInput


def _segments(tokenizer, encoded: dict) -> list[tuple[str, bool]]:
    """The encoded example as (text, trained_on) runs, decoded with special tokens, for highlighting in a UI."""
    pairs = zip(encoded["input_ids"], encoded["labels"])
    return [(tokenizer.decode([t for t, _ in run], skip_special_tokens=False), trained)
            for trained, run in itertools.groupby(pairs, key=lambda p: p[1] != IGNORE_INDEX)]


@dataclass(frozen=True)
class ValidationReport:
    path: str
    rows: int
    shape: DatasetShape
    mapping: dict[str, str]
    errors: list[str]  # blocking: the job must not start
    warnings: list[str]  # worth knowing; the job can start
    too_long: int
    duplicates: int
    max_tokens: int
    mean_tokens: float
    preview: list[list[tuple[str, bool]]]  # up to 3 examples as the model sees them: (text, trained_on) runs

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_dataset(path, tokenizer, max_length: int, mapping: dict[str, str] | None = None) -> ValidationReport:
    """Read, recognise and check every row; problems come with their 1-based data row numbers."""
    from jinja2 import TemplateError  # what chat templates raise (e.g. "roles must alternate user/assistant")

    if max_length < 1:
        raise InvalidInput(f"max_length must be at least 1 token, got {max_length}.")
    ds = read_dataset(path)
    shape, resolved = detect_shape(ds.column_names, mapping)
    problems: dict[str, list[int]] = {}
    seen: set[str] = set()
    duplicates: list[int] = []
    no_signal: list[int] = []
    lengths: list[int] = []
    preview: list[list[tuple[str, bool]]] = []
    for number, row in enumerate(ds, 1):
        found = _row_problems(row, shape, resolved)
        for problem in found:
            problems.setdefault(problem, []).append(number)
        if found:
            continue
        example = to_conversation(row, shape, resolved)
        try:
            ids, trained = tokenize_marked(tokenizer, example)
        except TemplateError as exc:
            problems.setdefault(f"the model's chat template rejects the conversation: {exc}", []).append(number)
            continue
        key = json.dumps(example, sort_keys=True, ensure_ascii=False)
        if key in seen:
            duplicates.append(number)
        seen.add(key)
        lengths.append(len(ids))
        encoded = truncate_marked(ids, trained, max_length)
        if all(label == IGNORE_INDEX for label in encoded["labels"]):
            no_signal.append(number)
        if len(preview) < 3:
            preview.append(_segments(tokenizer, encoded))

    errors = [f"{row_list(rows)}: {problem}" for problem, rows in problems.items()]
    if lengths and len(no_signal) == len(lengths):
        errors.append(f"No example keeps any trained (assistant) tokens within max_length {max_length}; "
                      f"raise max_length.")
    too_long = sum(n > max_length for n in lengths)
    warnings = _warnings(len(lengths), max_length, too_long, max(lengths, default=0), duplicates, no_signal)
    return ValidationReport(path=str(path), rows=len(ds), shape=shape, mapping=resolved, errors=errors,
                            warnings=warnings, too_long=too_long, duplicates=len(duplicates),
                            max_tokens=max(lengths, default=0),
                            mean_tokens=round(sum(lengths) / len(lengths), 1) if lengths else 0.0, preview=preview)


def _warnings(examples: int, max_length: int, too_long: int, longest: int, duplicates: list[int],
              no_signal: list[int]) -> list[str]:
    warnings = []
    if too_long:
        warnings.append(f"{too_long} of {examples} examples are longer than {max_length} tokens and will be "
                        f"truncated (longest: {longest} tokens); raise max_length or shorten them.")
    if duplicates:
        warnings.append(f"{len(duplicates)} duplicate rows ({row_list(duplicates)}) repeat an earlier row; remove "
                        f"them so those examples do not weigh more than the others.")
    if no_signal and len(no_signal) < examples:
        warnings.append(f"{len(no_signal)} examples ({row_list(no_signal)}) have no assistant tokens left after "
                        f"truncation to {max_length} tokens, so they teach nothing; raise max_length.")
    return warnings


def _row_problems(row: dict, shape: DatasetShape, mapping: dict[str, str]) -> list[str]:
    if shape is DatasetShape.CHAT:
        return _messages_problems(mapping["messages"], row.get(mapping["messages"]))
    required, optional = SHAPE_FIELDS[shape]
    found = [_field_problem(mapping[f], row.get(mapping[f]), f in optional) for f in required + optional
             if f in mapping]
    return [p for p in found if p]


def _field_problem(column: str, value, optional: bool) -> str | None:
    if value is None:
        return None if optional else f"{column!r} is missing"
    if not isinstance(value, str):
        return f"{column!r} is not a string (got {type(value).__name__} {value!r:.40})"
    if not optional and not value.strip():
        return f"{column!r} is empty"
    return None


def _messages_problems(column: str, messages) -> list[str]:
    if isinstance(messages, str):
        return [f"{column!r} is a string, not a list of {{role, content}} messages (CSV cannot hold lists: use "
                f"JSONL)"]
    if not isinstance(messages, list) or not messages:
        return [f"{column!r} is not a non-empty list of {{role, content}} messages"]
    problems = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") is None or m.get("content") is None:
            problems.append(f"{column!r} has a message that is not a {{role, content}} object")
        elif m["role"] not in ROLES:
            problems.append(f"{column!r} has a message with role {m['role']!r} (allowed: {', '.join(ROLES)})")
        elif not isinstance(m["content"], str):
            problems.append(f"{column!r} has a {m['role']} message whose content is not a string")
        elif m["role"] != "system" and not m["content"].strip():
            problems.append(f"{column!r} has an empty {m['role']} message")
    if not problems and not any(m["role"] == "assistant" for m in messages):
        problems.append(f"{column!r} has no assistant turn, so there is nothing to train on")
    return list(dict.fromkeys(problems))  # one line per kind of problem, however many messages have it
