"""The dataset layer: reading every format, recognising shapes, precise validation messages, masking, splitting."""
import csv
import json
import subprocess
import sys

import pytest

from engine.data import DatasetShape, detect_shape, encode_example, read_dataset, split_dataset, to_conversation
from engine.data_check import validate_dataset
from engine.errors import InvalidInput
from tests.helpers import ROOT, build_tokenizer

FORMATS = ["jsonl", "json", "csv", "parquet"]

CHAT = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                      {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(3)]
ALPACA = [{"instruction": f"Add {i} and {i}.", "input": f"{i}, {i}", "output": f"{2 * i}"} for i in range(3)]
ALPACA_NO_INPUT = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(3)]
PROMPT_COMPLETION = [{"prompt": f"Capital number {i}?", "completion": f"Paris {i}"} for i in range(3)]
TEXT = [{"text": f"The quick brown fox number {i}."} for i in range(3)]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def write(folder, fmt: str, rows: list[dict], name: str = "data"):
    path = folder / f"{name}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import datasets
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidInput) as info:
        call(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- every shape in every format

SHAPES = [
    (CHAT, DatasetShape.CHAT, CHAT[0]["messages"]),
    (ALPACA, DatasetShape.ALPACA, [{"role": "user", "content": "Add 0 and 0.\n\n0, 0"},
                                   {"role": "assistant", "content": "0"}]),
    (ALPACA_NO_INPUT, DatasetShape.ALPACA, [{"role": "user", "content": "Say 0."},
                                            {"role": "assistant", "content": "0"}]),
    (PROMPT_COMPLETION, DatasetShape.PROMPT_COMPLETION, [{"role": "user", "content": "Capital number 0?"},
                                                         {"role": "assistant", "content": "Paris 0"}]),
    (TEXT, DatasetShape.TEXT, "The quick brown fox number 0."),
]
SHAPE_IDS = ["chat", "alpaca", "alpaca-no-input", "prompt-completion", "text"]


# CSV cannot hold message lists: test_chat_in_csv_is_explained covers that case.
@pytest.mark.parametrize("fmt, rows, shape, first", [
    pytest.param(fmt, *case, id=f"{name}-{fmt}") for fmt in FORMATS for name, case in zip(SHAPE_IDS, SHAPES)
    if not (fmt == "csv" and name == "chat")])
def test_every_shape_in_every_format(tmp_path, tok, fmt, rows, shape, first):
    report = validate_dataset(write(tmp_path, fmt, rows), tok, max_length=64)
    assert report.ok, report.errors
    assert (report.rows, report.shape, report.warnings) == (3, shape, [])
    ds = read_dataset(tmp_path / f"data.{fmt}")
    assert to_conversation(ds[0], report.shape, report.mapping) == first
    assert len(report.preview) == 3 and report.max_tokens > 0 and report.mean_tokens > 0


def test_alpaca_with_empty_input_has_no_blank_lines(tmp_path, tok):
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi"}]
    ds = read_dataset(write(tmp_path, "csv", rows))
    shape, mapping = detect_shape(ds.column_names)
    assert mapping == {"instruction": "instruction", "output": "output", "input": "input"}
    assert to_conversation(ds[0], shape, mapping)[0] == {"role": "user", "content": "Say hi."}
    assert validate_dataset(tmp_path / "data.csv", tok, 64).ok


def test_csv_keeps_numbers_as_text(tmp_path, tok):
    path = tmp_path / "n.csv"
    path.write_text('prompt,completion\n"1, 2 or 3?",42\n', encoding="utf-8")
    ds = read_dataset(path)
    assert ds[0] == {"prompt": "1, 2 or 3?", "completion": "42"}


def test_json_rows_under_one_key(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": TEXT}), encoding="utf-8")
    assert read_dataset(path)["text"] == [r["text"] for r in TEXT]


def test_json_lines_saved_as_json(tmp_path):
    path = write(tmp_path, "jsonl", TEXT)
    path = path.rename(tmp_path / "lines.json")
    assert len(read_dataset(path)) == 3


# ---------------------------------------------------------------- shapes and mapping

def test_column_mapping(tmp_path, tok):
    rows = [{"question": "Capital of France?", "answer": "Paris", "id": 1}]
    path = write(tmp_path, "jsonl", rows)
    report = validate_dataset(path, tok, 64, mapping={"prompt": "question", "completion": "answer"})
    assert report.ok and report.shape is DatasetShape.PROMPT_COMPLETION
    assert report.mapping == {"prompt": "question", "completion": "answer"}
    assert to_conversation(rows[0], report.shape, report.mapping)[1] == {"role": "assistant", "content": "Paris"}


def test_mapping_picks_the_shape_the_user_means():
    assert detect_shape(["text", "body"], {"text": "body"}) == (DatasetShape.TEXT, {"text": "body"})
    shape, _ = detect_shape(["prompt", "completion", "body"], {"text": "body"})
    assert shape is DatasetShape.TEXT
    assert detect_shape(["prompt", "completion", "text"])[0] is DatasetShape.PROMPT_COMPLETION
    assert detect_shape(["q", "a"], {"prompt": "q", "completion": "a", "text": ""})[0] is DatasetShape.PROMPT_COMPLETION


def test_mapping_to_a_missing_column():
    msg = error_of(detect_shape, ["question", "answer"], {"prompt": "query", "completion": "answer"})
    assert "'query'" in msg and "['question', 'answer']" in msg


def test_mapping_an_unknown_field():
    msg = error_of(detect_shape, ["q"], {"question": "q"})
    assert "['question']" in msg and "'prompt'" in msg


def test_missing_columns_name_what_was_found_and_what_is_accepted(tmp_path, tok):
    path = write(tmp_path, "jsonl", [{"question": "a", "answer": "b"}])
    msg = error_of(validate_dataset, path, tok, 64)
    assert "['question', 'answer']" in msg
    for accepted in ("messages", "instruction", "output", "prompt", "completion", "text"):
        assert f"'{accepted}'" in msg
    assert "mapping" in msg
    assert "prompt_completion is missing ['completion']" in error_of(detect_shape, ["prompt", "id"])


# ---------------------------------------------------------------- bad files

def test_missing_file_folder_and_unsupported_suffix(tmp_path):
    assert "not found" in error_of(read_dataset, tmp_path / "nope.jsonl")
    assert "is a folder" in error_of(read_dataset, tmp_path)
    (tmp_path / "data.txt").write_text("hello\n")
    msg = error_of(read_dataset, tmp_path / "data.txt")
    assert "'.txt'" in msg and all(s in msg for s in (".jsonl", ".json", ".csv", ".parquet"))


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \n"])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_empty_file(tmp_path, fmt, content):
    path = tmp_path / f"empty.{fmt}"
    path.write_bytes(content)
    assert "empty" in error_of(read_dataset, path) or "only whitespace" in error_of(read_dataset, path)


def test_malformed_jsonl_lines_are_numbered(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "no end"\n\n[1, 2]\n{"text": "ok"}\n', encoding="utf-8")
    msg = error_of(read_dataset, path)
    assert "2 of 4 lines" in msg and "line 2:" in msg and "line 4: a JSON list, not an object" in msg


def test_many_malformed_lines_list_five_and_the_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(f"not json {i}\n" for i in range(8)), encoding="utf-8")
    msg = error_of(read_dataset, path)
    assert "8 of 8 lines" in msg and "line 5:" in msg and "line 6:" not in msg


def test_not_utf8_names_the_byte_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"))
    msg = error_of(read_dataset, path)
    assert "not UTF-8" in msg and "0xE9" in msg and "byte offset 28" in msg and "line 2" in msg
    assert "Re-save the file as UTF-8" in msg


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_utf8_bom_is_accepted(tmp_path, tok, fmt):
    path = write(tmp_path, fmt, PROMPT_COMPLETION)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = read_dataset(path)
    assert ds.column_names == ["prompt", "completion"] and len(ds) == 3
    assert validate_dataset(path, tok, 64).ok


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_binary_junk(tmp_path, fmt):
    path = tmp_path / f"junk.{fmt}"
    path.write_bytes(bytes(range(256)) * 4)
    msg = error_of(read_dataset, path)
    assert ("binary" in msg) if fmt != "parquet" else ("not a Parquet file" in msg)


def test_bad_json_and_csv_structure(tmp_path):
    (tmp_path / "a.json").write_text('[{"text": "a"}, "b"]')
    assert "row 2 of the list are not JSON objects" in error_of(read_dataset, tmp_path / "a.json")
    (tmp_path / "b.json").write_text('[{"text": "a"},\n {"text": }]')
    assert "line 2, column" in error_of(read_dataset, tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[]")
    assert "no examples" in error_of(read_dataset, tmp_path / "c.json")
    (tmp_path / "d.csv").write_text("prompt,completion\na,b\nc,d,e\n")
    assert "line 3" in error_of(read_dataset, tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("prompt,completion\n")
    assert "no data rows" in error_of(read_dataset, tmp_path / "e.csv")
    (tmp_path / "f.csv").write_text("prompt,prompt\na,b\n")
    assert "repeated column names" in error_of(read_dataset, tmp_path / "f.csv")


# ---------------------------------------------------------------- row checks

def test_empty_and_non_string_fields_with_row_numbers(tmp_path, tok):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": ""},
            {"prompt": "e", "completion": 42}, {"prompt": "g", "completion": "  "}, {"prompt": None, "completion": "x"}]
    report = validate_dataset(write(tmp_path, "jsonl", rows), tok, 64)
    assert not report.ok
    assert "rows 2, 4: 'completion' is empty" in report.errors
    assert any(e.startswith("row 3: 'completion' is not a string (got int 42)") for e in report.errors)
    assert "row 5: 'prompt' is missing" in report.errors


def test_row_lists_are_capped_with_a_total(tmp_path, tok):
    rows = [{"text": ""} for _ in range(15)]
    report = validate_dataset(write(tmp_path, "jsonl", rows), tok, 64)
    assert report.errors == ["rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 5 more (15 rows): 'text' is empty"]


def test_malformed_messages(tmp_path, tok):
    user = {"role": "user", "content": "hi"}
    rows = [{"messages": [user, {"role": "bot", "content": "x"}]}, {"messages": [user]}, {"messages": "hello"},
            {"messages": [user, {"role": "assistant", "content": ""}]}, {"messages": [user, {"role": "assistant"}]}]
    errors = validate_dataset(write(tmp_path, "jsonl", rows), tok, 64).errors
    assert "row 1: 'messages' has a message with role 'bot' (allowed: system, user, assistant)" in errors
    assert "row 2: 'messages' has no assistant turn, so there is nothing to train on" in errors
    assert any(e.startswith("row 3: 'messages' is a string") for e in errors)
    assert "row 4: 'messages' has an empty assistant message" in errors
    assert "row 5: 'messages' has a message that is not a {role, content} object" in errors


def test_chat_in_csv_is_explained(tmp_path, tok):
    path = tmp_path / "chat.csv"
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}]"\n', encoding="utf-8")
    assert "use JSONL" in validate_dataset(path, tok, 64).errors[0]


def test_too_long_and_duplicates_are_counted(tmp_path, tok):
    rows = PROMPT_COMPLETION + [{"prompt": "word " * 60, "completion": "x"}] + PROMPT_COMPLETION[:2]
    report = validate_dataset(write(tmp_path, "jsonl", rows), tok, max_length=64)
    assert report.ok and report.too_long == 1 and report.max_tokens > 64 and report.duplicates == 2
    assert "1 of 6 examples are longer than 64 tokens and will be truncated" in report.warnings[0]
    assert "2 duplicate rows (rows 5, 6)" in report.warnings[1]
    assert "row 4" in report.warnings[2] and "teach nothing" in report.warnings[2]


def test_real_example_dataset(tok):
    report = validate_dataset(ROOT / "assets/datasets/request_to_json.train.jsonl", tok, max_length=128)
    assert report.ok, report.errors
    assert report.rows == 400 and report.shape is DatasetShape.CHAT and len(report.preview) == 3


def test_preview_segments_show_what_is_trained(tmp_path, tok):
    report = validate_dataset(write(tmp_path, "jsonl", PROMPT_COMPLETION), tok, 64)
    assert report.preview[0] == [("<|im_start|>user\nCapital number 0?<|im_end|>\n<|im_start|>assistant\n", False),
                                 ("Paris 0<|im_end|>", True), ("\n", False)]


# ---------------------------------------------------------------- tokenizing and masking

def trained_text(tok, enc) -> str:
    return tok.decode([t for t, label in zip(enc["input_ids"], enc["labels"]) if label != -100],
                      skip_special_tokens=False)


def test_only_the_assistant_reply_is_trained(tok):
    conv = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."}]
    enc = encode_example(tok, conv, max_length=256)
    assert trained_text(tok, enc) == "The capital of France is Paris.<|im_end|>"
    prompt = tok.apply_chat_template(conv[:1], add_generation_prompt=True, tokenize=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert enc["labels"][:n_prompt] == [-100] * n_prompt and -100 not in enc["labels"][n_prompt:-1]
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(enc["attention_mask"]) and not enc["truncated"]


def test_multi_turn_masks_both_assistant_turns(tok):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And the fox?"},
            {"role": "assistant", "content": "Quick and brown."}]
    enc = encode_example(tok, conv, max_length=256)
    assert trained_text(tok, enc) == "Paris.<|im_end|>Quick and brown.<|im_end|>"
    runs = [label != -100 for label in enc["labels"]]
    assert sum(1 for a, b in zip([False] + runs, runs) if b and not a) == 2  # two separate trained spans


def test_truncation(tok):
    enc = encode_example(tok, [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "x"}], 16)
    assert enc["truncated"] and len(enc["input_ids"]) == 16 and set(enc["labels"]) == {-100}


def test_plain_text_trains_on_everything(tok):
    enc = encode_example(tok, "The quick brown fox.", max_length=64)
    assert enc["labels"] == enc["input_ids"] and enc["input_ids"][-1] == tok.eos_token_id


def test_tokenizer_without_chat_template_falls_back(tok):
    plain = build_tokenizer()
    plain.chat_template = None
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Paris"}]
    enc = encode_example(plain, conv, max_length=64)
    assert plain.decode(enc["input_ids"], skip_special_tokens=False) == "user: hi\nassistant: Paris<|im_end|>\n"
    assert trained_text(plain, enc) == " Paris<|im_end|>"


def test_real_tokenizer_from_model_folder(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = encode_example(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Paris"}], 64)
    assert trained_text(tok, enc) == "Paris<|im_end|>"


# ---------------------------------------------------------------- splitting

def test_split_is_deterministic_per_seed():
    import datasets

    ds = datasets.Dataset.from_list([{"text": str(i)} for i in range(20)])
    train, test = split_dataset(ds, 0.25, seed=1)
    assert (len(train), len(test)) == (15, 5)
    assert sorted(list(train["text"]) + list(test["text"])) == sorted(ds["text"])
    assert list(split_dataset(ds, 0.25, seed=1)[1]["text"]) == list(test["text"])
    assert list(split_dataset(ds, 0.25, seed=2)[1]["text"]) != list(test["text"])
    assert len(split_dataset(datasets.Dataset.from_list([{"text": str(i)} for i in range(10)]), 0.1, 0)[1]) == 1


@pytest.mark.parametrize("ratio", [0, -0.1, 0.51, 1.0])
def test_split_refuses_bad_ratios(ratio):
    import datasets

    assert "(0, 0.5]" in error_of(split_dataset, datasets.Dataset.from_list([{"text": "a"}] * 10), ratio, 0)


def test_split_refuses_to_leave_no_eval_row():
    import datasets

    assert "no eval row" in error_of(split_dataset, datasets.Dataset.from_list([{"text": "a"}] * 3), 0.2, 0)


def test_importing_the_module_stays_light():
    code = ("import sys, engine.data; heavy = [m for m in ('datasets', 'transformers', 'torch') if m in sys.modules];"
            " print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chat_template_refusals_become_row_errors(tmp_path):
    strict = build_tokenizer()
    strict.chat_template = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                            "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
                            "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "yo"}]}]
    report = validate_dataset(write(tmp_path, "jsonl", rows), strict, 64)
    assert report.errors == ["row 2: the model's chat template rejects the conversation: "
                             "Conversation roles must alternate user/assistant"]
