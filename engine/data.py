"""Datasets for fine-tuning: read, recognise the shape, tokenize with the prompt masked out of the loss, split
(validation and preview: data_check.py). `datasets`/`transformers` are imported lazily so `import engine` stays light.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidInput

if TYPE_CHECKING:
    import datasets

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips: tokens the model sees but is not trained on
MAX_LISTED = 10  # row numbers listed per message; the total count is always given


class DatasetShape(str, Enum):
    CHAT = "chat"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"
    TEXT = "text"


# Canonical field names per shape: (required, optional). Order matters: the first shape that fits wins.
SHAPE_FIELDS: dict[DatasetShape, tuple[tuple[str, ...], tuple[str, ...]]] = {
    DatasetShape.CHAT: (("messages",), ()),
    DatasetShape.ALPACA: (("instruction", "output"), ("input",)),
    DatasetShape.PROMPT_COMPLETION: (("prompt", "completion"), ()),
    DatasetShape.TEXT: (("text",), ()),
}
CANONICAL_FIELDS = ("messages", "instruction", "input", "output", "prompt", "completion", "text")


# ---------------------------------------------------------------- reading

def read_dataset(path: str | Path) -> "datasets.Dataset":
    """Load a .jsonl/.json/.csv/.parquet file after checking it closely enough to explain any problem."""
    path = Path(path)
    suffix = _check_path(path)
    if suffix == ".parquet":
        _check_parquet(path)
        return _load("parquet", path)
    text = _read_text(path)
    if suffix == ".jsonl":
        _check_jsonl(path, text)
        return _load("json", path)
    if suffix == ".json":
        field = _check_json(path, text)
        return _load("json", path, **({"field": field} if field else {}))
    header = _check_csv(path, text)
    import datasets
    # Every cell as a string and empty cells as "" (not NaN): a completion "42" stays text, "" is reported as empty.
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return _load("csv", path, features=features, keep_default_na=False, encoding="utf-8-sig")


def _check_path(path: Path) -> str:
    if not path.exists():
        raise InvalidInput(f"Dataset file not found: {path}. Check the path (relative paths start from {Path.cwd()}).")
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder; give one dataset file ({', '.join(SUPPORTED_SUFFIXES)}).")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidInput(f"{path.name}: unsupported file type {suffix or '(no suffix)'!r}. Supported: "
                           f"{', '.join(SUPPORTED_SUFFIXES)}; convert the file or rename it if it already is one.")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"Cannot read {path}: permission denied. Make it readable by this user.")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path.name} is empty (0 bytes); it needs at least one example.")
    return suffix


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    # NUL never occurs in UTF-8 text: it means a binary file (Excel, zip, gzip, Parquet...) or UTF-16 text.
    if b"\x00" in data[:65536]:
        raise InvalidInput(f"{path.name} looks like a binary file, not {path.suffix} text (it contains NUL "
                           f"bytes). Export it as UTF-8 {path.suffix} (a spreadsheet: 'Save as CSV UTF-8').")
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading byte order mark (Excel, Notepad) is fine
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"{path.name} is not UTF-8 text: byte 0x{data[exc.start]:02X} at byte offset "
                           f"{exc.start} (line {line}) is not valid UTF-8. Re-save the file as UTF-8 (an editor's "
                           f"'Save with encoding', or `iconv -f latin1 -t utf-8 in > out`).") from exc
    if not text.strip():
        raise InvalidInput(f"{path.name} contains only whitespace; it needs at least one example.")
    return text


def _check_parquet(path: Path) -> None:
    # A Parquet file starts and ends with the magic bytes PAR1; anything else is a renamed or broken file.
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(max(path.stat().st_size - 4, 0))
        if head != b"PAR1" or f.read(4) != b"PAR1" or f.tell() < 12:
            raise InvalidInput(f"{path.name} is not a Parquet file (no PAR1 header/footer). Re-export it as "
                               f"Parquet, or save it as .jsonl/.csv with the matching suffix.")


def _check_jsonl(path: Path, text: str) -> None:
    rows, problems = 0, []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        rows += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {number}: a JSON {type(value).__name__}, not an object")
    if problems:
        array = text.lstrip()[:1] == "[" and path.suffix.lower() == ".jsonl"
        hint = " The file looks like one JSON array: rename it to .json." if array else ""
        raise InvalidInput(f"{path.name}: {len(problems)} of {rows} lines are not valid JSON objects "
                           f"({_first_five(problems, '; ')}). Each line of a .jsonl file must be one object such as "
                           f'{{"prompt": "...", "completion": "..."}}; fix or remove those lines.{hint}')


def _check_json(path: Path, text: str) -> str | None:
    """Check a .json file; returns the key holding the rows when they sit under one key ({"data": [...]})."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several values: JSON Lines saved as .json, which `datasets` reads too
            _check_jsonl(path, text)
            return None
        raise InvalidInput(f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                           f"{exc.colno}. Expected a list of objects, one per example.") from exc
    field = None
    if isinstance(value, dict):
        keys = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(keys) != 1:
            raise InvalidInput(f"{path.name} holds one JSON object (keys: {list(value)}); expected a list of "
                               f"objects, one per example, or an object with exactly one such list.")
        field, value = keys[0], value[keys[0]]
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{path.name} has no examples: expected a non-empty list of objects.")
    bad = [i for i, item in enumerate(value, 1) if not isinstance(item, dict)]
    if bad:
        raise InvalidInput(f"{path.name}: {row_list(bad)} of the list are not JSON objects; every example must be an "
                           f"object such as {{\"text\": \"...\"}}.")
    return field


def _check_csv(path: Path, text: str) -> list[str]:
    """Check the CSV structure ourselves: pandas would silently shift a row with extra fields into an index."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader)
        rows = [(reader.line_num, row) for row in reader if row]  # blank lines are skipped, as pandas does
    except csv.Error as exc:
        raise InvalidInput(f"{path.name}: CSV error at line {reader.line_num}: {exc}. Check the quoting "
                           f"(a field with commas, quotes or newlines must be wrapped in double quotes).") from exc
    names = [h.strip() for h in header]
    if not all(names) or len(set(names)) != len(names):
        raise InvalidInput(f"{path.name}: the header row {header} has empty or repeated column names; give every "
                           f"column a unique name.")
    if not rows:
        raise InvalidInput(f"{path.name} has a header row but no data rows; add at least one example.")
    bad = [f"line {line}" for line, row in rows if len(row) != len(header)]
    if bad:
        raise InvalidInput(f"{path.name}: {len(bad)} rows do not have {len(header)} fields like the header "
                           f"({_first_five(bad, ', ')}). Quote fields that contain commas, or remove extra fields.")
    return header


def _first_five(items: list[str], sep: str) -> str:
    return sep.join(items[:5]) + (f"{sep}..." if len(items) > 5 else "")


def _load(kind: str, path: Path, **options) -> "datasets.Dataset":
    import datasets

    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=_cache_dir(), **options)
    except (ValueError, datasets.exceptions.DatasetGenerationError) as exc:
        raise InvalidInput(f"Could not read {path.name} as {kind}: {_root_cause(exc)}. Check that the file is "
                           f"valid {path.suffix} with one example per row.") from exc
    if len(ds) == 0:
        raise InvalidInput(f"{path.name} has no rows (only a header?); it needs at least one example.")
    return ds


def _cache_dir() -> str:
    # The engine points HF_DATASETS_CACHE into the workspace; outside it, still use the workspace, never ~/.cache.
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    from .settings import Settings
    return str(Settings.from_env().cache_dir / "datasets")


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- shapes

def detect_shape(columns: list[str], mapping: dict[str, str] | None = None) -> tuple[DatasetShape, dict[str, str]]:
    """Find the shape the columns fit; returns it with the mapping canonical field -> actual column."""
    mapping = {k: v for k, v in (mapping or {}).items() if v}  # a form may send "" for fields left blank
    unknown = sorted(set(mapping) - set(CANONICAL_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown field(s) {unknown} in the column mapping; the fields you can map are "
                           f"{list(CANONICAL_FIELDS)}, e.g. {{\"prompt\": \"question\"}}.")
    for field, column in mapping.items():
        if column not in columns:
            raise InvalidInput(f"Column mapping {field!r} -> {column!r}: the file has no column {column!r}. "
                               f"Columns found: {list(columns)}.")
    resolved = {f: mapping.get(f, f) for f in CANONICAL_FIELDS}
    fits = [s for s, (required, _) in SHAPE_FIELDS.items() if all(resolved[f] in columns for f in required)]
    # An explicit mapping names the shape the user means, even if other columns happen to fit another shape.
    if not fits:
        raise InvalidInput(_no_shape_message(columns, resolved))
    meant = [s for s in fits if set(mapping) & set(sum(SHAPE_FIELDS[s], ()))]
    shape = (meant or fits)[0]
    required, optional = SHAPE_FIELDS[shape]
    return shape, {f: resolved[f] for f in required + optional if resolved[f] in columns}


def _no_shape_message(columns: list[str], resolved: dict[str, str]) -> str:
    accepted = ("chat: 'messages' (a list of {role, content}); alpaca: 'instruction', 'output' and optional "
                "'input'; prompt_completion: 'prompt', 'completion'; text: 'text'")
    near = []
    for shape, (required, _) in SHAPE_FIELDS.items():
        missing = [resolved[f] for f in required if resolved[f] not in columns]
        if len(missing) < len(required):
            near.append(f"{shape.value} is missing {missing}")
    hint = f" Closest: {'; '.join(near)}." if near else ""
    return (f"No known dataset shape matches the columns {list(columns)}. Accepted shapes: {accepted}.{hint} "
            f"If your columns have other names, give a column mapping, e.g. "
            f"{{\"prompt\": \"question\", \"completion\": \"answer\"}}.")


def to_conversation(row: dict, shape: DatasetShape, mapping: dict[str, str]) -> list[dict] | str:
    """One row (that passed validation) as chat messages, or as plain text for the text shape."""
    shape = DatasetShape(shape)
    value = lambda field: row.get(mapping[field]) if field in mapping else None  # noqa: E731
    if shape is DatasetShape.CHAT:
        # Arrow pads message structs with None for keys that only other rows have; templates should not see them.
        return [{k: v for k, v in m.items() if v is not None} for m in value("messages")]
    if shape is DatasetShape.ALPACA:
        extra = value("input")
        user = value("instruction") + (f"\n\n{extra}" if extra else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": value("output")}]
    if shape is DatasetShape.PROMPT_COMPLETION:
        return [{"role": "user", "content": value("prompt")}, {"role": "assistant", "content": value("completion")}]
    return value("text")


# ---------------------------------------------------------------- tokenizing

def encode_example(tokenizer, example: list[dict] | str, max_length: int) -> dict:
    """Token ids, labels (-100 where no loss: everything but assistant replies), mask; cut to max_length."""
    ids, trained = tokenize_marked(tokenizer, example)
    return truncate_marked(ids, trained, max_length)


def truncate_marked(ids: list[int], trained: list[bool], max_length: int) -> dict:
    truncated = len(ids) > max_length
    ids, trained = ids[:max_length], trained[:max_length]
    return {"input_ids": ids, "labels": [t if keep else IGNORE_INDEX for t, keep in zip(ids, trained)],
            "attention_mask": [1] * len(ids), "truncated": truncated}


def tokenize_marked(tokenizer, example: list[dict] | str) -> tuple[list[int], list[bool]]:
    """Untruncated ids and, per token, whether the loss is computed on it."""
    if isinstance(example, str):
        ids = list(tokenizer(example)["input_ids"])
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)  # so the model learns where a document ends
        return ids, [True] * len(ids)
    if getattr(tokenizer, "chat_template", None):
        return _tokenize_with_template(tokenizer, example)
    return _tokenize_plain_chat(tokenizer, example)


def _template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if not isinstance(out, list):  # transformers v5 returns a BatchEncoding (a dict) here
        out = out["input_ids"]
    return list(out[0] if out and isinstance(out[0], list) else out)


def _tokenize_with_template(tokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    # The template renders turn by turn, so the conversation up to turn i plus the generation prompt is a prefix of
    # the full rendering: tokens between that prefix and the end of turn i are exactly what the model must produce.
    ids = _template_ids(tokenizer, messages)
    trained = [False] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_template_ids(tokenizer, messages[:i], add_generation_prompt=True))
        end = _end_after_eos(ids, start, len(_template_ids(tokenizer, messages[: i + 1])), tokenizer.eos_token_id)
        trained[start:end] = [True] * len(trained[start:end])
    return ids, trained


def _end_after_eos(ids: list[int], start: int, end: int, eos: int | None) -> int:
    # Generation stops at the end token; what the template adds after it ("\n") is formatting the model never
    # produces at inference, so it is not trained. Without an end token in the span, keep the span as is.
    for k in range(min(end, len(ids)) - 1, start - 1, -1):
        if ids[k] == eos:
            return k + 1
    return end


def _tokenize_plain_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    # No chat template: the same "role: content" lines and "assistant:" prompt that chat generation uses.
    ids: list[int] = []
    trained: list[bool] = []

    def add(text: str, train: bool) -> None:
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(tokens)
        trained.extend([train] * len(tokens))

    for m in messages:
        if m["role"] != "assistant":
            add(f"{m['role']}: {m['content']}\n", False)
            continue
        add("assistant:", False)
        add(f" {m['content']}", True)
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
            trained.append(True)
        add("\n", False)
    return ids, trained


def row_list(numbers: list[int]) -> str:
    listed = ", ".join(map(str, numbers[:MAX_LISTED]))
    if len(numbers) == 1:
        return f"row {listed}"
    more = len(numbers) - MAX_LISTED
    return f"rows {listed}" + (f" and {more} more ({len(numbers)} rows)" if more > 0 else "")


# ---------------------------------------------------------------- splitting

def split_dataset(ds, eval_ratio: float, seed: int) -> tuple["datasets.Dataset", "datasets.Dataset"]:
    """(train, eval), shuffled with `seed`: the same seed always gives the same split."""
    if not 0 < eval_ratio <= 0.5:
        raise InvalidInput(f"eval_ratio must be in (0, 0.5], got {eval_ratio}.")
    n_eval = math.floor(len(ds) * eval_ratio + 1e-9)  # the epsilon absorbs float error (10 * 0.1 -> 1)
    if n_eval < 1:
        raise InvalidInput(f"eval_ratio {eval_ratio} of {len(ds)} rows leaves no eval row; use at least "
                           f"{1 / max(len(ds), 1):.3g} or add rows.")
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def load_prompts(path: str) -> list[dict]:
    """[{id, prompt}] from a JSONL with a 'prompt' field, or from any dataset shape (the last user turn)."""
    ds = read_dataset(path)
    if "prompt" in ds.column_names and "completion" not in ds.column_names:
        ids = ds["id"] if "id" in ds.column_names else [str(i) for i in range(1, len(ds) + 1)]
        return [{"id": str(i), "prompt": p} for i, p in zip(ids, ds["prompt"]) if isinstance(p, str) and p.strip()]
    shape, mapping = detect_shape(ds.column_names)
    if shape is DatasetShape.TEXT:
        raise InvalidInput(f"{path} holds plain text; give prompts (a 'prompt' field) or chat/Alpaca data.")
    prompts = []
    for n, row in enumerate(ds, 1):
        users = [m["content"] for m in to_conversation(row, shape, mapping) if m["role"] == "user"]
        if users:
            prompts.append({"id": str(n), "prompt": users[-1]})
    return prompts
