import json
import shutil
import time

import pytest

from engine import InvalidInput, ModelStatus, OfflineError, UnsupportedModel


def test_register_local_tiny_llama(engine, tiny_model_dir):
    model = engine.add_model(str(tiny_model_dir), name="tiny")
    assert model.status == ModelStatus.READY.value and model.format == "hf"
    assert model.architecture == "LlamaForCausalLM"
    assert 20_000 < model.params < 200_000 and model.size_bytes > model.params * 4
    assert [m.id for m in engine.list_models()] == ["tiny"]


def test_default_name_comes_from_the_folder(engine, tiny_model_dir):
    assert engine.add_model(str(tiny_model_dir)).id == "tiny-llama"


def test_duplicate_name_is_refused_and_nothing_changes(engine, tiny_model_dir):
    engine.add_model(str(tiny_model_dir), name="tiny")
    with pytest.raises(InvalidInput, match="already registered"):
        engine.add_model(str(tiny_model_dir), name="tiny")
    assert len(engine.list_models()) == 1


@pytest.mark.parametrize("ref, message", [
    ("", "Give a model folder"),
    ("/definitely/not/here", "neither an existing folder"),
    ("no spaces allowed/in ids", "neither an existing folder"),
])
def test_bad_references(engine, ref, message):
    with pytest.raises(InvalidInput, match=message):
        engine.add_model(ref)


def test_pickle_only_weights_are_refused(engine, copy_of, tiny_model_dir):
    folder = copy_of(tiny_model_dir, "pickled")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    with pytest.raises(UnsupportedModel, match="pickle weights"):
        engine.add_model(str(folder))


def test_missing_tokenizer_is_refused(engine, copy_of, tiny_model_dir):
    folder = copy_of(tiny_model_dir, "notok")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UnsupportedModel, match="no tokenizer"):
        engine.add_model(str(folder))


def test_non_causal_lm_is_refused(engine, copy_of, tiny_model_dir):
    folder = copy_of(tiny_model_dir, "bert")
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["BertModel"], model_type="bert")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="not a causal language model"):
        engine.add_model(str(folder))


def test_remote_code_models_are_refused(engine, copy_of, tiny_model_dir):
    folder = copy_of(tiny_model_dir, "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="trust_remote_code"):
        engine.add_model(str(folder))


def test_folder_without_config_is_refused(engine, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedModel, match="no config.json"):
        engine.add_model(str(tmp_path / "empty"))


def test_fake_gguf_is_refused(engine, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(InvalidInput, match="not a GGUF file"):
        engine.add_model(str(fake))
    assert engine.list_models() == [] and engine.list_runs() == []


def test_hub_id_offline_fails_at_once(engine):
    t0 = time.monotonic()
    with pytest.raises(OfflineError, match="offline"):
        engine.add_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert time.monotonic() - t0 < 1.0
    assert engine.list_models() == []


def test_delete_keeps_external_folders_and_removes_owned_ones(engine, tiny_model_dir, tmp_path):
    engine.add_model(str(tiny_model_dir), name="external")
    engine.delete_model("external")
    assert tiny_model_dir.exists() and engine.list_models() == []
    owned = engine.settings.models_dir / "owned"
    shutil.copytree(tiny_model_dir, owned)
    engine.store.add_model(id="owned", format="hf", path=str(owned), source="run", source_ref="", status="ready",
                           owned=True)
    engine.delete_model("owned")
    assert not owned.exists()
