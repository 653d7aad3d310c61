import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import EvaluateConfig, FineTuneConfig, GenerationParams, InvalidInput, RunStatus
from engine.training import qlora_unavailable_reason
from tests.helpers import ROOT

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"
EVAL = ROOT / "assets" / "datasets" / "request_to_json.eval.jsonl"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train, evals = folder / "train.jsonl", folder / "eval.jsonl"
    train.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:48]))
    evals.write_text("".join(EVAL.read_text().splitlines(keepends=True)[:8]))
    return train, evals


def tiny_config(data, **overrides) -> FineTuneConfig:
    train, evals = data
    values = dict(model_id="tiny", train_path=str(train), eval_path=str(evals), max_steps=12, batch_size=4,
                  learning_rate=5e-3, max_length=96, eval_steps=6, save_steps=6, eval_max_examples=4,
                  eval_max_new_tokens=8, lora_r=4, lora_alpha=8)
    values.update(overrides)
    return FineTuneConfig(**values)


def series(engine, run_id, name):
    return [m.value for m in engine.run_metrics(run_id) if m.name == name]


def test_lora_trains_saves_merges_and_chats(tiny_engine, small_data):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rid = tiny_engine.start_run(tiny_config(small_data, merge=True, output_name="tiny-json"))
    run = tiny_engine.wait_run(rid, timeout=300)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [line.message for line in tiny_engine.run_logs(rid)][-5:])
    losses = series(tiny_engine, rid, "train_loss")
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learns
    s = run.summary
    assert {"eval_loss_before", "eval_loss_after", "score_before", "score_after", "trainable_pct"} <= set(s)
    assert s["eval_loss_after"] < s["eval_loss_before"] and 0 < s["trainable_pct"] < 10
    # 12 steps, eval every 6: the loss "after" is the one the Trainer evaluated at step 12, not a second pass
    assert series(tiny_engine, rid, "eval_loss")[-1] == pytest.approx(s["eval_loss_after"], abs=1e-4)
    assert any("as evaluated at step 12" in line.message for line in tiny_engine.run_logs(rid))

    adapter, merged = tiny_engine.get_model("tiny-json"), tiny_engine.get_model("tiny-json-merged")
    assert adapter.format == "hf-adapter" and adapter.parent_id == "tiny" and adapter.run_id == rid
    assert merged.format == "hf" and merged.parent_id == "tiny"
    base = AutoModelForCausalLM.from_pretrained(tiny_engine.get_model("tiny").path)
    with_adapter = PeftModel.from_pretrained(base, adapter.path).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged.path).eval()
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(ids).logits, merged_model(ids).logits, atol=1e-4, rtol=1e-4)
    params = GenerationParams(temperature=0.0, max_new_tokens=4)
    for name in ("tiny-json", "tiny-json-merged"):
        assert list(tiny_engine.chat(name, [{"role": "user", "content": "add 2 eggs"}], params))[-1].done


def test_timing_a_step_before_training_leaves_the_training_unchanged(tiny_engine, small_data):
    """The fine-tune job times one step before it starts (for its ETA): the losses that follow are the same."""
    from transformers import set_seed

    from engine.jobs.context import JobContext
    from engine.loading import load_tokenizer
    from engine.training import TrainingSession, build_model, prepare_data

    config = tiny_config(small_data, max_steps=4, eval_steps=100, save_steps=100, eval_max_examples=0)
    path = tiny_engine.get_model("tiny").path
    losses = []
    for timed in (False, True):
        set_seed(config.seed)
        run_id = tiny_engine.store.add_run("finetune", "{}", "local", None)
        ctx = JobContext(run_id, tiny_engine.store, tiny_engine.settings)
        try:
            tokenizer = load_tokenizer(path, pad=True)
            data = prepare_data(config, tokenizer)
            session = TrainingSession(ctx, config, build_model(config, path), tokenizer, data)
            if timed:
                assert session.time_step() > 0
            session.train()
        finally:
            ctx.cancel_event.set()
        losses.append(series(tiny_engine, run_id, "train_loss"))
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_full_finetune_registers_a_full_model(tiny_engine, small_data):
    rid = tiny_engine.start_run(tiny_config(small_data, method="full", max_steps=6, learning_rate=1e-3,
                                            eval_max_examples=0, output_name="tiny-full"))
    run = tiny_engine.wait_run(rid, timeout=300)
    assert run.status is RunStatus.SUCCEEDED, run.error
    model = tiny_engine.get_model("tiny-full")
    assert model.format == "hf" and model.params == tiny_engine.get_model("tiny").params
    assert run.summary["trainable_pct"] == 100.0


def test_cancel_leaves_a_resumable_run_that_matches_an_uninterrupted_one(tiny_engine, small_data):
    # long enough (a few seconds) for the cancel to land mid-way
    config = tiny_config(small_data, max_steps=300, save_steps=20, eval_steps=300, eval_max_examples=0,
                         learning_rate=1e-3)
    straight = tiny_engine.wait_run(tiny_engine.start_run(config.model_copy(update={"output_name": "a"})), 300)
    assert straight.status is RunStatus.SUCCEEDED, straight.error

    rid = tiny_engine.start_run(config.model_copy(update={"output_name": "b"}))
    deadline = time.monotonic() + 120
    while tiny_engine.get_run(rid).progress < 0.4 and time.monotonic() < deadline:
        time.sleep(0.1)
    tiny_engine.cancel_run(rid)
    cancelled = tiny_engine.wait_run(rid, timeout=60)
    assert cancelled.status is RunStatus.CANCELLED
    resumed_id = tiny_engine.resume_run(rid)
    resumed = tiny_engine.wait_run(resumed_id, timeout=300)
    assert resumed.status is RunStatus.SUCCEEDED, resumed.error
    assert resumed.summary["steps"] == 300 and resumed.config["resume_from_run"] == rid
    a, b = straight.summary["eval_loss_after"], resumed.summary["eval_loss_after"]
    assert abs(a - b) / a < 0.02, (a, b)


def test_continue_a_finished_run_for_more_epochs(tiny_engine, small_data):
    first = tiny_engine.wait_run(tiny_engine.start_run(tiny_config(small_data, max_steps=0, epochs=1,
                                                                   eval_max_examples=0, save_steps=50)), 300)
    assert first.status is RunStatus.SUCCEEDED, first.error
    with pytest.raises(InvalidInput, match="more epochs"):
        tiny_engine.resume_run(first.id)
    more = tiny_engine.wait_run(tiny_engine.resume_run(first.id, extra_epochs=1), 300)
    assert more.status is RunStatus.SUCCEEDED, more.error
    assert more.summary["steps"] == 2 * first.summary["steps"]


def test_bad_inputs_are_refused_before_a_run_starts(tiny_engine, small_data, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": []}\nnot json\n')
    with pytest.raises(InvalidInput):
        tiny_engine.start_run(tiny_config(small_data, train_path=str(broken)))
    with pytest.raises(InvalidInput, match="GiB of memory"):
        tiny_engine.start_run(tiny_config(small_data, method="full", batch_size=512, max_length=32768))
    if qlora_unavailable_reason():  # this machine has no GPU (or no bitsandbytes): QLoRA is refused up front
        with pytest.raises(InvalidInput, match="CUDA|bitsandbytes"):
            tiny_engine.start_run(tiny_config(small_data, method="qlora"))
    assert tiny_engine.list_runs() == []


@pytest.mark.skipif(qlora_unavailable_reason() is not None, reason="QLoRA needs a CUDA GPU and bitsandbytes")
def test_qlora_trains_on_a_4bit_base_and_merges_into_the_full_precision_base(tiny_engine, small_data):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rid = tiny_engine.start_run(tiny_config(small_data, method="qlora", merge=True, output_name="tiny-qlora"))
    run = tiny_engine.wait_run(rid, timeout=300)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [line.message for line in tiny_engine.run_logs(rid)][-8:])
    losses = series(tiny_engine, rid, "train_loss")
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert run.summary["eval_loss_after"] < run.summary["eval_loss_before"] and "score_after" in run.summary
    # the adapter loads on the full-precision base on the CPU; the merged model is that sum, with no 4-bit config
    merged = tiny_engine.get_model("tiny-qlora-merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_engine.get_model("tiny").path)
    with_adapter = PeftModel.from_pretrained(base, tiny_engine.get_model("tiny-qlora").path).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged.path).eval()
    assert getattr(merged_model.config, "quantization_config", None) is None
    assert merged_model.device.type == "cpu"
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(ids).logits, merged_model(ids).logits, atol=1e-4, rtol=1e-4)


def test_torchrun_two_processes_on_cpu(tiny_engine, small_data, tmp_path):
    config = tmp_path / "ft.yaml"
    train, evals = small_data
    config.write_text(f"model_id: tiny\ntrain_path: {train}\neval_path: {evals}\nmax_steps: 4\nbatch_size: 2\n"
                      "max_length: 96\neval_steps: 4\nsave_steps: 4\neval_max_examples: 2\n"
                      "eval_max_new_tokens: 4\noutput_name: tiny-ddp\n")
    env = dict(os.environ, SLMOPS_HOME=str(tiny_engine.settings.home), SLMOPS_OFFLINE="1", OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="")  # two processes on one GPU would need two GPUs: on the CPU (gloo) here
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "-m", "engine", "finetune", "--config", str(config)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tiny_engine.list_runs()[0]
    assert run.status is RunStatus.SUCCEEDED and run.summary["world_size"] == 2
    assert run.summary["steps"] == 4
    assert tiny_engine.get_model("tiny-ddp").format == "hf-adapter"


@pytest.mark.real
def test_short_lora_run_on_the_bundled_model(real_engine, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:16]))
    config = FineTuneConfig(model_id="smollm2-135m-instruct", train_path=str(train), eval_path=str(EVAL),
                            max_steps=3, batch_size=2, eval_steps=3, save_steps=3, eval_max_examples=4,
                            eval_max_new_tokens=40, output_name="smollm2-ci-lora")
    rid = real_engine.start_run(config)
    run = real_engine.wait_run(rid, timeout=600)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [line.message for line in real_engine.run_logs(rid)][-5:])
    assert real_engine.get_model("smollm2-ci-lora").parent_id == "smollm2-135m-instruct"
    real_engine.delete_model("smollm2-ci-lora")


def test_an_adapter_set_trains_one_adapter_per_task_and_scores_each_on_its_task(tiny_engine, small_data):
    from engine import AdapterSetConfig

    label = ROOT / "assets" / "datasets" / "ticket_label.train.jsonl"
    config = AdapterSetConfig(**{**tiny_config(small_data).model_dump(exclude={"train_path", "eval_path"}),
                                 "eval_max_examples": 3, "max_length": 256, "adapters": [
                                     {"name": "set-json", "train_path": str(small_data[0]), "task": "request_to_json"},
                                     {"name": "set-label", "train_path": str(label), "task": "ticket_label"},
                                     {"name": "set-plain", "train_path": str(small_data[0])}]})
    rid = tiny_engine.start_run(config)
    run = tiny_engine.wait_run(rid, timeout=600)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [line.message for line in tiny_engine.run_logs(rid)][-5:])
    rows = {r["adapter"]: r for r in run.summary["adapters"]}
    assert list(rows) == ["set-json", "set-label", "set-plain"] and run.summary["adapters_done"] == 3
    for name, task in (("set-json", "request_to_json"), ("set-label", "ticket_label")):
        model = tiny_engine.get_model(name)
        assert model.format == "hf-adapter" and model.parent_id == "tiny" and model.run_id == rid
        row = rows[name]
        assert row["task"] == task and row["ci_low"] <= row["score_after"] <= row["ci_high"]
        assert row["score_before"] is not None and row["eval_loss_after"] > 0
        # the Models tab's lineage shows each adapter under its base with its task score
        numbers = {c["id"]: c["numbers"] for c in tiny_engine.lineage("tiny")["children"]}
        assert f"task {task}" in numbers[name]
    # without a task the adapter keeps the fine-tune's own held-out score
    assert rows["set-plain"]["task"] == "(held-out split)" and rows["set-plain"]["score_after"] is not None
    # an export of a set's adapter is checked on the adapter's own held-out examples: its task's, with references
    from engine.export_verify import adapter_examples

    pairs, _, _ = adapter_examples(tiny_engine.store, tiny_engine.get_model("set-label"), 5, print)
    label_eval = ROOT / "assets" / "datasets" / "ticket_label.eval.jsonl"
    assert [ref for _, ref in pairs] == [json.loads(x)["messages"][-1]["content"]
                                         for x in label_eval.read_text().splitlines()[:5]]
    # every stage's own predictions are kept with the run
    kinds = [a.kind for a in tiny_engine.run_artifacts(rid)]
    assert kinds.count("predictions") == 4  # two tasks: base before and adapter after each


def test_the_olive_backend_trains_scores_and_registers_an_adapter(tiny_engine, small_data):
    """`olive finetune` runs offline in the run folder on our split; its steps and losses stream into the run, and
    its adapter is scored and registered like ours; the run keeps Olive's config and command."""
    rid = tiny_engine.start_run(tiny_config(small_data, backend="olive", output_name="tiny-olive", max_steps=4))
    run = tiny_engine.wait_run(rid, timeout=600)
    logs = [line.message for line in tiny_engine.run_logs(rid)]
    assert run.status is RunStatus.SUCCEEDED, (run.error, logs[-8:])
    s = run.summary
    assert s["backend"] == "olive" and s["steps"] == 4 and {"score_before", "score_after", "train_loss"} <= set(s)
    assert len(series(tiny_engine, rid, "train_loss")) == 4  # one per step, streamed from Olive's output
    adapter = tiny_engine.get_model("tiny-olive")
    assert adapter.format == "hf-adapter" and adapter.parent_id == "tiny"
    assert list(tiny_engine.chat("tiny-olive", [{"role": "user", "content": "hi"}], GenerationParams(max_new_tokens=4)))
    assert (tiny_engine.settings.runs_dir / str(rid) / "olive" / ".olive-cache").is_dir()  # its cache: the run's
    data = json.loads((tiny_engine.settings.runs_dir / str(rid) / "olive" / "output" / "config.json").read_text())
    # every training example (Olive's CLI keeps 256 by default), each whole as ours are (its default joins them),
    # tokenized by our pre-process (Olive's user script) so the loss is on the replies only, as in our backend
    assert data["data_configs"][0]["pre_process_data_config"] == {
        "type": "slmops_chat_pre_process", "max_seq_len": 96, "max_samples": s["train_examples"]}
    assert data["data_configs"][0]["user_script"].endswith("engine/olive_data.py")
    assert {"olive-config", "olive-command"} <= {a.kind for a in tiny_engine.run_artifacts(rid)}


def test_finetune_and_quantize_runs_export_olive_configs_that_olive_runs(tiny_engine, small_data):
    """Each run exports Olive's own config (written by Olive, dry run), and `olive run --config` repeats it outside
    the dashboard: the fine-tune as Olive's LoRA pass, the int4 export as its Model Builder pass (which cannot run
    with this environment's onnxruntime-genai: the config says so)."""
    from engine import QuantizeConfig
    from engine.olive import OFFLINE_ENV, builder_problem

    finetune = tiny_engine.wait_run(tiny_engine.start_run(tiny_config(small_data, max_steps=2, eval_max_examples=0,
                                                                      output_name="tiny-for-olive")), timeout=300)
    export = tiny_engine.wait_run(tiny_engine.start_run(QuantizeConfig(model_id="tiny", precision="int4",
                                                                       verify_tokens=0, output_name="tiny-olive-q")),
                                  timeout=600)
    for run, made in ((finetune, "adapter/adapter_config.json"), (export, "model/genai_config.json")):
        assert run.status is RunStatus.SUCCEEDED, run.error
        path = tiny_engine.olive_config(run.id)
        written = json.loads(path.read_text())
        assert written["output_dir"] == str(path.parent)
        done = subprocess.run([sys.executable, "-m", "olive", "run", "--config", str(path)], cwd=path.parent.parent,
                              env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True, timeout=600)
        if run is export:
            assert written["passes"]["m"] == {**written["passes"]["m"], "type": "ModelBuilder", "precision": "int4",
                                              "int4_block_size": 32, "int4_accuracy_level": 4}
            if builder_problem():  # Olive 0.13 and onnxruntime-genai 0.18 do not fit: said where the config is
                assert "quantized_model" in done.stdout + done.stderr
                assert "no longer has" in (path.parent.parent / "command.txt").read_text()
                continue
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert (path.parent / made).exists(), sorted(p.name for p in path.parent.rglob("*"))
    with pytest.raises(InvalidInput, match="fine-tune and quantize runs"):
        tiny_engine.olive_config(tiny_engine.start_run(EvaluateConfig(model_id="tiny", task="request_to_json",
                                                                      limit=1, backend="transformers")))


def test_an_olive_run_that_fails_shows_olives_error_and_registers_nothing(tiny_engine, small_data):
    rid = tiny_engine.start_run(tiny_config(small_data, backend="olive", output_name="tiny-olive-bad", max_steps=2,
                                            target_modules="no_such_proj"))
    run = tiny_engine.wait_run(rid, timeout=600)
    assert run.status is RunStatus.FAILED and "olive finetune failed" in run.error and "no_such_proj" in run.error
    assert not tiny_engine.store.has_model("tiny-olive-bad")
