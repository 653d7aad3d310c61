"""Bad input across the tabs and the CLI, table-driven: each case must raise an engine error or a config validation
error whose message (as the UI shows it, via slmops_ui.forms.user_message) names the problem and how to fix it,
never a traceback, and must leave the store and the workspace files as they were."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine import EvaluateConfig, FineTuneConfig, GenerationParams, GgufConfig, Task, TuneConfig
from engine.configs import (AdapterSetConfig, AddAdaptersConfig, BenchmarkConfig, DistillConfig, DistillSweepConfig,
                            QuantizeConfig)
from engine.errors import SlmopsError
from engine.records import RunStatus
from engine.gguf_export import check_architecture
from slmops_ui.forms import user_message
from tests.helpers import ROOT

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"
GOOD_ROW = json.loads(TRAIN.read_text().splitlines()[0])


def write(tmp: Path, name: str, content) -> str:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def rows(n: int) -> str:
    return "".join(json.dumps(GOOD_ROW) + "\n" for _ in range(n))


def finetune(engine, path, **overrides):
    engine.check(FineTuneConfig(model_id="tiny", train_path=path, **{"max_length": 64, **overrides}))


def tune(engine, tmp: Path, base=None, **fields):
    """Check a study over a tiny fine-tune (`base` changes the base's fields)."""
    base = {"model_id": "tiny", "train_path": write(tmp, "a.jsonl", rows(8)), **(base or {})}
    engine.check(TuneConfig(base=base, **fields))


def hf_folder(tmp: Path, name: str, tiny: Path, drop=(), config_update=None, extra=None) -> str:
    import shutil

    folder = tmp / name
    shutil.copytree(tiny, folder)
    for pattern in drop:
        for f in folder.glob(pattern):
            f.unlink()
    if config_update:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_update)
        (folder / "config.json").write_text(json.dumps(config))
    for file_name, data in (extra or {}).items():
        (folder / file_name).write_bytes(data)
    return str(folder)


# id, action(engine, tmp, tiny_dir), words the message must contain (all, case-insensitive)
CASES = [
    # ---- datasets (Fine-tune / Distill tabs, `python -m engine finetune`) ----
    ("jsonl-broken-line", lambda e, t, d: finetune(e, write(t, "a.jsonl", rows(2) + "{not json\n" + rows(2))),
     ["line 3", "json"]),
    ("csv-ragged", lambda e, t, d: finetune(e, write(t, "a.csv", 'prompt,completion\n"a,b\nc,d,e,f\n')), ["csv"]),
    ("latin-1", lambda e, t, d: finetune(e, write(t, "a.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"))),
     ["utf-8"]),
    ("binary-junk", lambda e, t, d: finetune(e, write(t, "a.jsonl", bytes(range(256)) * 40)), ["utf-8"]),
    ("huge-line", lambda e, t, d: finetune(e, write(t, "a.jsonl", "{" + "x" * 5_000_000 + "\n")), ["line 1"]),
    ("empty-file", lambda e, t, d: finetune(e, write(t, "a.jsonl", "")), ["empty"]),
    ("blank-lines-only", lambda e, t, d: finetune(e, write(t, "a.jsonl", "\n\n  \n")), ["whitespace", "example"]),
    ("wrong-columns", lambda e, t, d: finetune(e, write(t, "a.jsonl", '{"question": "q", "answer": "a"}\n' * 3)),
     ["question", "column"]),
    ("empty-field", lambda e, t, d: finetune(e, write(t, "a.jsonl", rows(2) + '{"prompt": "", "completion": "x"}\n'
                                                   + '{"prompt": "p", "completion": "c"}\n')), ["row", "empty"]),
    ("non-string-field", lambda e, t, d: finetune(e, write(t, "a.jsonl", '{"prompt": 5, "completion": "x"}\n'
                                                           '{"prompt": "p", "completion": ["c"]}\n')), ["string"]),
    ("missing-dataset", lambda e, t, d: finetune(e, str(t / "nope.jsonl")), ["nope.jsonl"]),
    ("unknown-extension", lambda e, t, d: finetune(e, write(t, "a.xlsx", "x")), ["jsonl"]),
    # ---- numbers out of range (every tab's form goes through the typed configs) ----
    ("lr-zero", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", learning_rate=0),
     ["learning", "greater than 0", "you gave 0", "change"]),
    ("lora-rank-zero", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", lora_r=0), ["lora"]),
    ("negative-steps", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", max_steps=-5), ["steps"]),
    ("zero-batch", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", batch_size=0), ["batch"]),
    ("negative-epochs", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", epochs=-1), ["epochs"]),
    ("huge-max-length", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", max_length=10**7),
     ["length"]),
    ("eval-ratio-too-big", lambda e, t, d: FineTuneConfig(model_id="tiny", train_path="x", eval_ratio=0.9),
     ["eval"]),
    ("temperature-out-of-range", lambda e, t, d: GenerationParams(temperature=5), ["temperature"]),
    ("distill-keep-zero-layers", lambda e, t, d: DistillConfig(teacher_model_id="tiny", train_path="x",
                                                               keep_layers=0), ["keep"]),
    ("benchmark-no-models", lambda e, t, d: BenchmarkConfig(model_ids=[]), ["model"]),
    ("distill-sweep-without-task", lambda e, t, d: DistillSweepConfig(teacher_model_id="tiny", train_path="x"),
     ["task"]),
    ("distill-sweep-size-too-big", lambda e, t, d: e.check(DistillSweepConfig(
        teacher_model_id="tiny", train_path=write(t, "a.jsonl", rows(8)), task="request_to_json", sizes=[1, 2])),
     ["sizes [2]", "fewer than"]),
    ("block-not-dividing", lambda e, t, d: e.check(QuantizeConfig(model_id="tiny", block_size=48)),
     ["block", "64"]),
    ("block-too-small", lambda e, t, d: QuantizeConfig(model_id="tiny", block_size=7), ["block"]),
    ("quantize-gptq-without-data", lambda e, t, d: e.check(QuantizeConfig(model_id="tiny", fit="gptq")),
     ["calibration_path", "minmax"]),
    ("quantize-calibration-missing", lambda e, t, d: e.check(QuantizeConfig(
        model_id="tiny", calibration_path=str(t / "nope.jsonl"))), ["nope.jsonl"]),
    ("quantize-adapter-unknown", lambda e, t, d: e.check(QuantizeConfig(model_id="tiny", adapters=["ghost"])),
     ["ghost"]),
    ("quantize-adapter-not-an-adapter", lambda e, t, d: e.check(QuantizeConfig(model_id="tiny", adapters=["tiny"])),
     ["tiny", "not a LoRA adapter"]),
    ("add-adapters-to-a-non-export", lambda e, t, d: e.check(AddAdaptersConfig(model_id="tiny", adapters=["tiny"])),
     ["not an ONNX export", "with adapters"]),
    ("add-adapters-none", lambda e, t, d: AddAdaptersConfig(model_id="tiny", adapters=[]), ["adapters", "at least 1"]),
    ("olive-full-finetune", lambda e, t, d: finetune(e, write(t, "a.jsonl", rows(8)), backend="olive", method="full"),
     ["olive", "lora"]),
    ("olive-config-of-an-unknown-run", lambda e, t, d: e.olive_config(999), ["999"]),
    ("adapter-set-names-repeat", lambda e, t, d: AdapterSetConfig(model_id="tiny", adapters=[
        {"name": "a", "train_path": "x.jsonl"}, {"name": "a", "train_path": "y.jsonl"}]), ["repeat", "own name"]),
    ("adapter-set-full-method", lambda e, t, d: AdapterSetConfig(model_id="tiny", method="full", adapters=[
        {"name": "a", "train_path": "x.jsonl"}]), ["method", "lora"]),
    ("adapter-set-none", lambda e, t, d: AdapterSetConfig(model_id="tiny", adapters=[]), ["adapters", "at least 1"]),
    ("adapter-set-unknown-task", lambda e, t, d: e.check(AdapterSetConfig(model_id="tiny", adapters=[
        {"name": "a", "train_path": write(t, "a.jsonl", rows(8)), "task": "nope"}])), ["nope", "task"]),
    ("adapter-set-bad-file", lambda e, t, d: e.check(AdapterSetConfig(model_id="tiny", max_length=256, adapters=[
        {"name": "good", "train_path": write(t, "a.jsonl", rows(8))},
        {"name": "bad", "train_path": write(t, "b.jsonl", "not json\n")}])), ["adapter 'bad'", "b.jsonl"]),
    ("adapter-set-name-taken", lambda e, t, d: e.check(AdapterSetConfig(model_id="tiny", adapters=[
        {"name": "tiny", "train_path": write(t, "a.jsonl", rows(8))}])), ["tiny", "already exists"]),
    # ---- models (Models tab, `python -m engine models add`) ----
    ("model-path-missing", lambda e, t, d: e.add_model(str(t / "no-such-model")), ["no-such-model"]),
    ("model-path-is-a-file", lambda e, t, d: e.add_model(write(t, "notes.txt", "hello")), ["notes.txt"]),
    ("model-folder-without-config", lambda e, t, d: e.add_model(hf_folder(t, "noconf", d, drop=["config.json"])),
     ["config.json", "save_pretrained"]),
    ("fake-gguf", lambda e, t, d: e.add_model(write(t, "fake.gguf", os.urandom(4096))), ["gguf", "convert"]),
    ("pickle-only-weights", lambda e, t, d: e.add_model(hf_folder(t, "pickled", d, drop=["*.safetensors"],
                                                                  extra={"pytorch_model.bin": b"\x80\x04junk"})),
     ["safetensors"]),
    ("remote-code-required", lambda e, t, d: e.add_model(hf_folder(
        t, "remote", d, config_update={"auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}})),
     ["trust_remote_code"]),
    ("unsupported-architecture", lambda e, t, d: e.add_model(hf_folder(
        t, "bert", d, config_update={"architectures": ["BertModel"], "model_type": "bert"})), ["bert"]),
    ("missing-tokenizer", lambda e, t, d: e.add_model(hf_folder(t, "notok", d, drop=["tokenizer*"])),
     ["tokenizer"]),
    ("name-with-path", lambda e, t, d: e.add_model(str(d), name="../evil"), ["name"]),
    ("duplicate-name", lambda e, t, d: e.add_model(str(d), name="tiny"), ["already", "another name"]),
    ("hub-id-offline", lambda e, t, d: e.add_model("HuggingFaceTB/SmolLM2-135M-Instruct", source="hub"),
     ["offline"]),
    # ---- chat, runs ----
    ("chat-unknown-model", lambda e, t, d: list(e.chat("nope", [{"role": "user", "content": "hi"}])), ["nope"]),
    ("chat-prompt-longer-than-context", lambda e, t, d: list(e.chat("tiny", [{"role": "user", "content":
                                                                             "Paris is big. " * 400}])),
     ["context", "shorten"]),
    ("chat-unknown-adapter", lambda e, t, d: list(e.chat("tiny:nope", [{"role": "user", "content": "hi"}])),
     ["nope", "has none", "adapters"]),
    ("serve-unknown-adapter", lambda e, t, d: e.serve_refs(["tiny"], ["nope"]), ["nope", "adapter"]),
    ("delete-unknown-run", lambda e, t, d: e.delete_run(999), ["999"]),
    ("resume-unknown-run", lambda e, t, d: e.resume_run(999), ["999"]),
    ("delete-unknown-model", lambda e, t, d: e.delete_model("ghost"), ["ghost"]),
    # ---- tasks and evaluation (`python -m engine eval`, `tasks add`) ----
    ("eval-unknown-task", lambda e, t, d: e.check(EvaluateConfig(model_id="tiny", task="nope")), ["nope", "task"]),
    ("eval-onnx-without-export", lambda e, t, d: e.check(EvaluateConfig(model_id="tiny", task="request_to_json",
                                                                         backend="onnx")),
     ["no verified onnx export", "quantize"]),
    ("task-invalid-regex", lambda e, t, d: e.add_task(Task(name="r", eval_path=write(t, "r.jsonl", rows(3)),
                                                           scorer="regex", pattern="(unclosed")),
     ["pattern", "regular expression"]),
    ("task-json-scorer-on-text", lambda e, t, d: e.add_task(Task(name="j", scorer="json", eval_path=write(
        t, "j.jsonl", '{"prompt": "Capital of France?", "completion": "Paris"}\n' * 3))), ["json", "exact"]),
    ("task-without-references", lambda e, t, d: e.add_task(Task(name="n", eval_path=write(
        t, "n.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n' * 3))), ["reference"]),
    ("finetune-name-taken", lambda e, t, d: finetune(e, write(t, "a.jsonl", rows(8)), output_name="tiny",
                                                     max_length=256),
     ["already exists", "another output name"]),
    ("distill-name-taken", lambda e, t, d: e.check(DistillConfig(
        teacher_model_id="tiny", train_path=write(t, "a.jsonl", rows(8)), output_name="tiny")), ["already exists"]),
    ("benchmark-unknown-task", lambda e, t, d: e.check(BenchmarkConfig(model_ids=["tiny"], task="nope")), ["nope"]),
    ("gguf-name-exists", lambda e, t, d: e.check(GgufConfig(model_id="tiny", output_name="tiny")),
     ["tiny", "already exists", "another output name"]),
    ("gguf-unknown-type", lambda e, t, d: GgufConfig(model_id="tiny", gguf_type="q3_k"), ["gguf", "q4_1"]),
    ("gguf-not-llama", lambda e, t, d: check_architecture(Path(write(t, "config.json", '{"architectures": '
                                                                    '["GPT2LMHeadModel"]}')).parent),
     ["GPT2LMHeadModel", "Llama", "ONNX"]),
    ("gguf-unknown-task", lambda e, t, d: e.check(GgufConfig(model_id="tiny", task="nope")), ["nope"]),
    ("quantize-unknown-task", lambda e, t, d: e.check(QuantizeConfig(model_id="tiny", task="nope")), ["nope"]),
    ("distill-unknown-task", lambda e, t, d: e.check(DistillConfig(
        teacher_model_id="tiny", train_path=write(t, "a.jsonl", rows(8)), task="nope")), ["nope"]),
    ("task-judge-without-rubric", lambda e, t, d: e.add_task(Task(name="j2", scorer="judge", judge_model="tiny",
                                                                   eval_path=write(t, "j.jsonl", rows(3)))),
     ["judge_model", "rubric"]),
    ("task-judge-model-unknown", lambda e, t, d: e.add_task(Task(name="j3", scorer="judge", judge_model="ghost",
                                                                  rubric="Correct.", eval_path=write(t, "j.jsonl",
                                                                                                     rows(3)))),
     ["ghost"]),
    ("tune-unknown-field", lambda e, t, d: tune(e, t, space={"colour": {"choices": [1]}}),
     ["colour", "not a field", "learning_rate"]),
    ("tune-range-outside-bounds", lambda e, t, d: tune(e, t, space={"learning_rate": {"low": 1e-4, "high": 5}}),
     ["learning_rate", "5", "less than or equal to 1"]),
    ("tune-log-range-at-zero", lambda e, t, d: tune(e, t, space={"lora_dropout": {"low": 0, "high": 0.1,
                                                                                   "log": True}}),
     ["log range", "above 0"]),
    ("tune-objective-not-reported", lambda e, t, d: tune(e, t, base={"eval_max_examples": 0}, objective="score"),
     ["score", "eval_max_examples", "eval_loss"]),
    ("tune-unknown-objective", lambda e, t, d: tune(e, t, objective="accuracy"), ["accuracy", "score or eval_loss"]),
    ("tune-storage-cannot-open", lambda e, t, d: tune(e, t, storage="sqlite:////no/such/folder/studies.db"),
     ["/no/such/folder/studies.db", "cannot be opened", "postgresql://"]),
    ("tune-olive-eval-loss", lambda e, t, d: tune(e, t, base={"backend": "olive"}, objective="eval_loss"),
     ["Olive backend reports no eval loss", "score"]),
    ("tune-olive-pruned", lambda e, t, d: tune(e, t, base={"backend": "olive"}), ["pruner none", "Olive"]),
    ("tune-zero-trials", lambda e, t, d: tune(e, t, trials=0), ["trials", "greater than or equal to 1"]),
    ("tune-grid-without-steps", lambda e, t, d: tune(e, t, sampler="grid"), ["grid", "choices or a step"]),
    ("task-duplicate-name", lambda e, t, d: e.add_task(Task(name="request_to_json", eval_path=write(
        t, "d.jsonl", rows(3)))), ["exists", "another name"]),
]


def snapshot(engine) -> tuple:
    home = engine.settings.home
    files = sorted(str(p.relative_to(home)) for folder in ("models", "datasets") if (home / folder).exists()
                   for p in (home / folder).rglob("*"))
    return ([(m.id, m.status, m.path, m.size_bytes) for m in engine.list_models()],
            [(r.id, r.status.value) for r in engine.list_runs(limit=None)], files)


@pytest.mark.parametrize("case_id, action, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_message_and_changes_nothing(tiny_engine, tiny_model_dir, tmp_path, case_id, action,
                                                            words):
    before = snapshot(tiny_engine)
    with pytest.raises((SlmopsError, ValidationError)) as info:
        action(tiny_engine, tmp_path, tiny_model_dir)
    message = user_message(info.value)
    assert all(w.lower() in message.lower() for w in words), message
    assert "Traceback" not in message and "pydantic" not in message.lower() and len(message) < 2000, message
    assert snapshot(tiny_engine) == before


def test_a_name_a_queued_run_will_register_is_refused_for_another_run(tiny_engine, tmp_path):
    """Two runs in the queue with one output name: the second is refused at start, not after its work."""
    queued = GgufConfig(model_id="tiny", output_name="mine")
    run_id = tiny_engine.store.add_run("gguf", queued.model_dump_json(), "engine.jobs.gguf:run", "tiny")
    try:
        for config in (GgufConfig(model_id="tiny", gguf_type="f16", output_name="mine"),
                       FineTuneConfig(model_id="tiny", train_path=write(tmp_path, "a.jsonl", rows(8)),
                                      output_name="mine", max_length=64)):
            with pytest.raises(SlmopsError, match=f"Run {run_id} .*'mine'.*another output name"):
                tiny_engine.start_run(config)
    finally:
        tiny_engine.store.finish_run(run_id, RunStatus.CANCELLED)
    assert [r.id for r in tiny_engine.list_runs(limit=None)] == [run_id]


def test_a_bom_unicode_and_emoji_are_read_as_text(tiny_engine, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_text('{"prompt": "Qu\'est-ce que Paris ? 🗼", "completion": "Une ville — 🇫🇷"}\n' * 4,
                    encoding="utf-8-sig")
    report = tiny_engine.validate_dataset("tiny", str(path), 64)
    assert report.errors == [] and report.rows == 4
    reply = "".join(c.text for c in tiny_engine.chat("tiny", [{"role": "user", "content": "Bonjour 🙂 ça va ?"}]))
    assert isinstance(reply, str)


def test_deleting_a_model_in_use_is_refused_and_keeps_it(tiny_engine, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(rows(16))
    run_id = tiny_engine.start_run(FineTuneConfig(model_id="tiny", train_path=str(data), max_steps=400,
                                                  max_length=256, eval_max_examples=0))
    before = snapshot(tiny_engine)[0]
    with pytest.raises(SlmopsError) as info:
        tiny_engine.delete_model("tiny")
    message = user_message(info.value)
    assert f"[{run_id}]" in message and "cancel them first" in message, message
    assert snapshot(tiny_engine)[0] == before
    tiny_engine.cancel_run(run_id)
    tiny_engine.wait_run(run_id, timeout=30)


def test_two_sessions_deleting_a_loaded_model_at_once(tiny_engine, tiny_model_dir, copy_of):
    import threading

    tiny_engine.add_model(str(copy_of(tiny_model_dir, "spare")), name="spare")
    list(tiny_engine.chat("spare", [{"role": "user", "content": "hi"}]))  # loaded in the chat cache
    outcomes = []

    def delete():
        try:
            tiny_engine.delete_model("spare")
            outcomes.append("deleted")
        except SlmopsError as exc:
            outcomes.append(user_message(exc))

    threads = [threading.Thread(target=delete) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes, key=len) == ["deleted", "No model named 'spare'. `python -m engine models list` shows "
                                                    "the registered ones."], outcomes
    assert "spare" not in tiny_engine.loaded_models() and not tiny_engine.store.has_model("spare")
    with pytest.raises(SlmopsError, match="spare"):
        list(tiny_engine.chat("spare", [{"role": "user", "content": "hi"}]))
    assert [m.id for m in tiny_engine.list_models()] == ["tiny"]


@pytest.mark.parametrize("args, words", [
    (["models", "add", "/no/such/folder"], ["/no/such/folder"]),
    (["chat", "--model", "nope", "--prompt", "hi"], ["nope"]),
    (["finetune", "--config", "/no/such.yaml"], ["/no/such.yaml"]),
    (["runs", "show", "12345"], ["12345"]),
    (["serve", "--model", "tiny", "--max-concurrency", "0"], ["max concurrency 0", "1 or more"]),
    (["tune", "worker", "--storage", "sqlite:///{tmp}/s.db", "--study", "nope"], ["no study named 'nope'"]),
], ids=["add-missing", "chat-unknown", "config-missing", "run-unknown", "serve-max-concurrency-0", "tune-no-study"])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, words):
    env = dict(os.environ, SLMOPS_HOME=str(tmp_path / "ws"), SLMOPS_OFFLINE="1")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and all(w in out.stderr for w in words), out.stderr


def test_the_table_is_big_enough():
    assert len(CASES) >= 25
