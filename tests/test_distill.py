import json
import os
from pathlib import Path
import subprocess
import sys
import time

import pytest

from engine import DistillConfig, GenerateDataConfig, InvalidInput, RunStatus
from engine.jobs.generate import apply_filters
from tests.helpers import ROOT, build_tiny_llama

PROMPTS = ROOT / "assets" / "prompts" / "seed_prompts.jsonl"


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("teacher") / "teacher", seed=1, layers=4)


@pytest.fixture
def distill_engine(engine, tiny_teacher_dir):
    engine.add_model(str(tiny_teacher_dir), name="teacher")
    return engine


def gen_config(**overrides):
    values = dict(teacher_model_id="teacher", max_prompts=12, batch_size=4, max_new_tokens=12,
                  drop_truncated=False, min_chars=0, output_name="tiny-data")
    values.update(overrides)
    return GenerateDataConfig(**values)


def test_generation_writes_a_dataset_with_filter_counts(distill_engine):
    rid = distill_engine.start_run(gen_config())
    run = distill_engine.wait_run(rid, timeout=300)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.summary["prompts"] == 12 and run.summary["generated"] == 12
    assert run.summary["kept"] + sum(v for k, v in run.summary.items() if k.startswith("dropped_")) == 12
    [dataset] = distill_engine.list_datasets()
    assert dataset.run_id == rid and dataset.model_id == "teacher"
    rows = [json.loads(line) for line in open(dataset.path, encoding="utf-8")]
    assert len(rows) == run.summary["kept"]
    assert rows[0]["messages"][0]["role"] == "user" and rows[0]["messages"][1]["role"] == "assistant"
    assert run.summary["backend"] == "transformers" and run.summary["teacher_tokens_per_s"] > 0


def test_generation_resume_keeps_rows_and_does_only_the_rest(distill_engine):
    rid = distill_engine.start_run(gen_config(max_prompts=400, batch_size=2, max_new_tokens=24, output_name=None))
    deadline = time.monotonic() + 120
    raw = distill_engine.settings.runs_dir / str(rid) / "raw.jsonl"
    while (not raw.exists() or len(raw.read_text().splitlines()) < 6) and time.monotonic() < deadline:
        time.sleep(0.1)
    distill_engine.cancel_run(rid)
    assert distill_engine.wait_run(rid, timeout=60).status is RunStatus.CANCELLED
    kept_before = raw.read_text().splitlines()
    assert len(kept_before) >= 6
    resumed = distill_engine.resume_run(rid)
    log = "\n".join(line.message for line in distill_engine.run_logs(resumed))
    new_raw = distill_engine.settings.runs_dir / str(resumed) / "raw.jsonl"
    while "already answered" not in log and time.monotonic() < deadline:
        time.sleep(0.2)
        log = "\n".join(line.message for line in distill_engine.run_logs(resumed))
    assert f"{len(kept_before)} already answered" in log
    assert new_raw.read_text().splitlines()[:len(kept_before)] == kept_before  # the old rows are kept as they were
    distill_engine.cancel_run(resumed)
    distill_engine.wait_run(resumed, timeout=60)


def test_filters_count_each_reason():
    config = gen_config(drop_truncated=True, min_chars=3, max_chars=20, regex="^[A-Z]", require_json=False)
    rows = [{"prompt": "p", "response": r, "finish": f} for r, f in [
        ("", "stop"), ("Cut off answer", "length"), ("Hi", "stop"), ("A" * 30, "stop"), ("lower case", "stop"),
        ("Good answer", "stop"), ("Good answer", "stop")]]
    kept, counts = apply_filters(config, rows)
    assert [r["response"] for r in kept] == ["Good answer"]
    assert counts == {"empty": 1, "cut_off": 1, "too_short": 1, "too_long": 1, "regex": 1, "not_json": 0,
                      "duplicate": 1}


def test_derived_student_copies_the_chosen_teacher_layers(tiny_teacher_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.distill import derive_student

    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    student = derive_student(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for key in s:
        source = key.replace("layers.0.", "layers.0.").replace("layers.1.", "layers.3.")
        torch.testing.assert_close(s[key], t[source], rtol=0, atol=0)
    assert DistillConfig(teacher_model_id="t", train_path="x", keep_layers=10).layer_indices(30) == \
        [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]


def write_chat(path, n=40):
    lines = (ROOT / "assets" / "datasets" / "request_to_json.train.jsonl").read_text().splitlines()[:n]
    path.write_text("\n".join(lines) + "\n")
    return path


def distill_config(tmp_path, **overrides):
    values = dict(teacher_model_id="teacher", train_path=str(write_chat(tmp_path / "d.jsonl")), keep_layers=2,
                  max_steps=16, batch_size=4, max_length=96, learning_rate=3e-3, eval_steps=8, save_steps=8,
                  eval_max_examples=4, agreement_tokens=4, general_ppl_tokens=256, output_name="student")
    values.update(overrides)
    return DistillConfig(**values)


def test_layer_importance_finds_a_layer_that_does_nothing():
    """A layer whose output projections are zero adds nothing to the residual stream: skipping it costs nothing,
    so a student never keeps it; every real layer costs something when skipped (the labels are the model's own
    greedy choices, which every real layer helps to make)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from engine.distill import layer_importance, select_layers

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    ids = torch.randint(0, 64, (3, 12))
    with torch.no_grad():
        labels = torch.cat([ids[:, :1], model(input_ids=ids).logits.argmax(-1)[:, :-1]], 1)
    labels[:, :5] = -100  # the prompt part is not scored
    base, rises = layer_importance(model, [(ids, torch.ones_like(ids), labels)])
    assert len(rises) == 4 and abs(rises[2]) < 1e-5 and base > 0
    assert all(r > 1e-4 for i, r in enumerate(rises) if i != 2)
    kept, rounds = select_layers(model, [(ids, torch.ones_like(ids), labels)], 3)
    assert kept == [0, 1, 3] and len(rounds) == 1
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4  # the model is left whole


def tiny_pair_and_batch():
    """A random tiny teacher and student (vocabulary 64) and a batch of 3 rows: prompts masked (-100), the last
    row right-padded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    teacher, student = LlamaForCausalLM(config).eval(), LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (3, 10))
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0  # a right-padded row
    labels = ids.clone()
    labels[0, :4], labels[1, :6], labels[2, :3], labels[2, 8:] = -100, -100, -100, -100
    return teacher, student, ids, mask, labels


def test_distill_loss_on_response_positions_equals_the_full_logits_formula():
    """The trainer runs the head only where a response token is predicted; its loss is the textbook
    α·T²·KL(teacher‖student) + (1−α)·CE over response tokens, computed here from the full logits."""
    import torch
    import torch.nn.functional as F

    from engine.distill import make_distill_trainer

    teacher, student, ids, mask, labels = tiny_pair_and_batch()
    alpha, t = 0.3, 2.0
    trainer_cls = make_distill_trainer(teacher, alpha, t)
    trainer = trainer_cls.__new__(trainer_cls)  # compute_loss needs only the loss parts' log
    trainer._parts = {"kd_loss": [], "ce_loss": []}
    got = trainer.compute_loss(student, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    with torch.no_grad():
        s_logits = student(input_ids=ids, attention_mask=mask).logits[:, :-1]
        t_logits = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1]
    keep = labels[:, 1:] != -100
    ce = F.cross_entropy(s_logits[keep], labels[:, 1:][keep])
    kd = F.kl_div(F.log_softmax(s_logits[keep] / t, -1), F.softmax(t_logits[keep] / t, -1),
                  reduction="batchmean") * t * t
    assert torch.allclose(got, alpha * kd + (1 - alpha) * ce, atol=1e-5)


def test_cached_teacher_top_k_gives_the_kl_of_the_merged_tail():
    """The teacher's answer computed once: with all tokens but one kept, the cached loss is the exact loss; with
    fewer, it is the KL of the distributions whose other tokens are merged into one bucket, which never exceeds the
    full KL."""
    import torch
    import torch.nn.functional as F

    from engine.distill import make_distill_trainer, response_positions, teacher_top_k, top_k_kl

    teacher, student, ids, mask, labels = tiny_pair_and_batch()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    t = 2.0

    def loss(cache):
        trainer_cls = make_distill_trainer(teacher, 0.5, t, cache)
        trainer = trainer_cls.__new__(trainer_cls)
        trainer._parts = {"kd_loss": [], "ce_loss": []}
        return trainer.compute_loss(student, batch)

    exact = loss(None)
    # the cache is keyed by the unpadded ids: built from these rows padded on the other side, it still matches
    left = torch.stack([torch.cat([torch.zeros(2, dtype=torch.long), r[:8]]) if i == 2 else r
                        for i, r in enumerate(ids)])
    left_mask = torch.stack([torch.cat([torch.zeros(2, dtype=torch.long), torch.ones(8, dtype=torch.long)])
                             if i == 2 else m for i, m in enumerate(mask)])
    left_labels = torch.stack([torch.cat([torch.full((2,), -100), r[:8]]) if i == 2 else r
                               for i, r in enumerate(labels)])
    full_cache = teacher_top_k(teacher, [(left, left_mask, left_labels)], 64, t)
    assert len(full_cache) == 3 and all(v[1].shape[1] == 63 for v in full_cache.values())
    assert torch.allclose(loss(full_cache), exact, atol=1e-5)

    keep = response_positions(labels)
    with torch.no_grad():
        s = student(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits / t
        tl = teacher(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits / t
    full_kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(tl, -1), log_target=True, reduction="none").sum(-1)
    small = teacher_top_k(teacher, [(ids, mask, labels)], 8, t)
    parts = [torch.cat(p) for p in zip(*(small[k] for k in small))]
    merged = top_k_kl(s, *parts)
    assert merged.shape == full_kl.shape and bool((merged <= full_kl + 1e-6).all()) and float(merged.mean()) > 0
    assert not torch.allclose(loss(small), exact)  # a real approximation on a flat random teacher


def test_kd_training_lowers_the_loss_and_registers_the_student(distill_engine, tmp_path):
    preview = distill_engine.student_preview(distill_config(tmp_path))
    assert len(preview["layers"]) == 2 and 0 < preview["ratio"] < 1
    rid = distill_engine.start_run(distill_config(tmp_path, alpha=1.0, task="request_to_json", task_limit=3))
    run = distill_engine.wait_run(rid, timeout=300)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [m.message for m in distill_engine.run_logs(rid)][-4:])
    kd = [m.value for m in distill_engine.run_metrics(rid) if m.name == "kd_loss"]
    ce = [m.value for m in distill_engine.run_metrics(rid) if m.name == "ce_loss"]
    assert len(kd) == 16 and sum(kd[-4:]) < sum(kd[:4]) and ce
    s = run.summary
    for key in ("heldout_ppl_teacher", "heldout_ppl_student", "agreement", "general_ppl_student",
                "decode_speedup", "params_ratio", "task_score_teacher", "task_score_student", "task_retention"):
        assert key in s, key
    assert 0 < s["params_ratio"] < 1
    assert len(s["layers"]) == 2 and s["importance_rounds"] == 2  # chosen by measured importance (4 → 3 → 2)
    logs = "\n".join(m.message for m in distill_engine.run_logs(rid))
    assert "round 1: loss rise without each layer: 0:" in logs and "teacher on request_to_json" in logs
    student = distill_engine.get_model("student")
    assert student.parent_id == "teacher" and student.params == preview["params"]
    for name in ("config.json", "generation_config.json"):  # saved to generate with its KV cache
        saved = json.loads((Path(student.path) / name).read_text())
        assert saved.get("use_cache", True) is True, name


def test_ce_only_ablation_has_no_kd_term(distill_engine, tmp_path):
    rid = distill_engine.start_run(distill_config(tmp_path, alpha=0.0, max_steps=4, eval_max_examples=0,
                                                  general_ppl_tokens=0, output_name="student-ce"))
    run = distill_engine.wait_run(rid, timeout=300)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert all(m.value == 0 for m in distill_engine.run_metrics(rid) if m.name == "kd_loss")


def test_student_with_another_tokenizer_is_refused(distill_engine, tmp_path, tiny_model_dir, copy_of):
    other = copy_of(tiny_model_dir, "other-vocab")
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first = next(iter(vocab))
    vocab["zz-renamed"] = vocab.pop(first)
    (other / "tokenizer.json").write_text(json.dumps(tok))
    distill_engine.add_model(str(other), name="other")
    with pytest.raises(InvalidInput, match="does not share the teacher"):
        distill_engine.start_run(distill_config(tmp_path, student="existing", student_model_id="other"))


def test_bad_distill_inputs(distill_engine, tmp_path):
    with pytest.raises(InvalidInput, match="distinct indices"):
        distill_engine.start_run(distill_config(tmp_path, layers="0,9"))
    with pytest.raises(InvalidInput, match="registered student"):
        distill_engine.start_run(distill_config(tmp_path, student="existing"))
    with pytest.raises(InvalidInput, match="not valid"):
        distill_engine.start_run(gen_config(regex="(unclosed"))
    assert distill_engine.list_runs() == []


def test_distill_under_torchrun_two_processes(distill_engine, tmp_path):
    config = tmp_path / "distill.yaml"
    config.write_text("kind: distill\n" + "\n".join(
        f"{k}: {json.dumps(v)}" for k, v in distill_config(tmp_path, max_steps=4, eval_max_examples=2,
                                                            general_ppl_tokens=0, output_name="student-ddp")
        .model_dump(exclude_defaults=True).items()) + "\n")
    env = dict(os.environ, SLMOPS_HOME=str(distill_engine.settings.home), SLMOPS_OFFLINE="1", OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="")  # two processes on the CPU (gloo), also on a machine with one GPU
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "engine",
                             "distill", "--config", str(config)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = distill_engine.list_runs()[0]
    assert run.status is RunStatus.SUCCEEDED and run.summary["world_size"] == 2 and run.summary["steps"] == 4
    assert distill_engine.get_model("student-ddp").parent_id == "teacher"


@pytest.mark.real
def test_real_teacher_generates_and_distills_a_few_steps(real_engine, tmp_path):
    gen = real_engine.start_run(GenerateDataConfig(teacher_model_id="smollm2-135m-instruct", max_prompts=6,
                                                   batch_size=6, max_new_tokens=32, drop_truncated=False,
                                                   output_name="ci-real-data"))
    run = real_engine.wait_run(gen, timeout=600)
    assert run.status is RunStatus.SUCCEEDED, run.error
    data = next(d for d in real_engine.list_datasets() if d.run_id == gen)
    rid = real_engine.start_run(DistillConfig(teacher_model_id="smollm2-135m-instruct", train_path=data.path,
                                              eval_ratio=0.34, keep_layers=4, max_steps=2, batch_size=2,
                                              eval_max_examples=2, agreement_tokens=4, general_ppl_tokens=256,
                                              output_name="ci-real-student"))
    run = real_engine.wait_run(rid, timeout=600)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.summary["params_ratio"] < 0.5
    real_engine.delete_model("ci-real-student")


def test_size_sweep_trains_a_student_per_size_and_scores_each_on_the_task(distill_engine, tmp_path):
    from engine import JOB_KINDS

    config = JOB_KINDS["distill_sweep"].config(
        **{**distill_config(tmp_path).model_dump(), "sizes": [3, 1], "max_steps": 4, "eval_max_examples": 0,
           "general_ppl_tokens": 0, "task": "ticket_label", "task_limit": 3, "output_name": "small"})
    assert config.sizes == [1, 3]  # sorted, one student each
    rid = distill_engine.start_run(config)
    run = distill_engine.wait_run(rid, timeout=600)
    assert run.status is RunStatus.SUCCEEDED, (run.error, [m.message for m in distill_engine.run_logs(rid)][-6:])
    rows = run.summary["students"]
    assert [r["layers"] for r in rows] == [1, 3] and [r["student"] for r in rows] == ["small-1l", "small-3l"]
    assert rows[0]["params_ratio"] < rows[1]["params_ratio"] < 1
    assert all("task_retention" in r and "decode_speedup" in r for r in rows)
    for r in rows:
        model = distill_engine.get_model(r["student"])
        assert model.parent_id == "teacher" and model.run_id == rid
    logs = [m.message for m in distill_engine.run_logs(rid)]
    assert sum("teacher on ticket_label" in m for m in logs) == 1  # the teacher is scored once for all students
    assert {m.name.split("/")[0] for m in distill_engine.run_metrics(rid) if "/" in m.name} == {"1 layers",
                                                                                              "3 layers"}
