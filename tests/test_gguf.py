"""GGUF export: the bundled model's round trip reproduces the shipped file exactly, exports of a tiny Llama are read
back by transformers within rounding and chat like their source, the Modelfile's template (and Foundry Local's
prompt template of ONNX exports) writes what the chat template writes, and what cannot be exported is refused before
a run starts."""
import re
from pathlib import Path

import numpy as np
import pytest

from engine import GenerationParams, GgufConfig, InvalidInput, ModelFormat
from engine.gguf_export import GGUF_FILE, MODELFILE, check_architecture, modelfile, render_go_template, write_gguf

CONVERSATION = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one?"}]


def template_of(text: str) -> str:
    return re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)


def test_bundled_round_trip_reproduces_the_shipped_gguf_block_for_block(real_engine, tmp_path):
    from gguf import GGUFReader

    from engine.models import bundled_gguf_path

    source = real_engine.get_model("smollm2-135m-instruct")  # converted from the shipped Q4_1 GGUF to safetensors
    out = tmp_path / "rt.gguf"
    facts = write_gguf(source.path, out, "q4_1", name="rt", pre="smollm")
    shipped, ours = GGUFReader(str(bundled_gguf_path())), GGUFReader(str(out))
    theirs = {t.name: t for t in shipped.tensors}
    assert set(theirs) == {t.name for t in ours.tensors} and facts["tensors"] == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    for tensor in ours.tensors:  # every quantized block, scale and offset byte for byte
        assert tensor.tensor_type == theirs[tensor.name].tensor_type, tensor.name
        assert np.array_equal(np.asarray(tensor.data), np.asarray(theirs[tensor.name].data)), tensor.name
    for key, field in shipped.fields.items():  # the model's shape and the whole tokenizer, as llama.cpp wrote them
        if key.startswith(("llama.", "tokenizer.")):
            assert ours.fields[key].contents() == field.contents(), key


def test_modelfile_and_foundry_templates_write_what_the_chat_template_writes(real_engine, tiny_model_dir):
    from engine.chat_template import foundry_inference_model
    from engine.loading import load_tokenizer

    bundled = load_tokenizer(real_engine.get_model("smollm2-135m-instruct").path)
    text = modelfile(bundled)
    assert text.startswith(f"FROM ./{GGUF_FILE}\n") and 'PARAMETER stop "<|im_end|>"' in text
    default = re.search(r'SYSTEM """(.*?)"""', text, re.S).group(1)
    assert default.startswith("You are a helpful AI assistant named SmolLM")  # the template's own default
    expected = bundled.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    # Ollama puts the SYSTEM prompt first when a conversation has none: the text is the chat template's
    assert render_go_template(template_of(text), [{"role": "system", "content": default}] + CONVERSATION) == expected

    tiny = load_tokenizer(tiny_model_dir)  # plain ChatML without a default system prompt
    text = modelfile(tiny, system="Be brief.")
    messages = [{"role": "system", "content": "Be brief."}] + CONVERSATION
    assert 'SYSTEM """Be brief."""' in text
    assert render_go_template(template_of(text), messages) == tiny.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)

    # Foundry Local's inference_model.json (its documented format: Name + PromptTemplate with "{Content}")
    messages = [{"role": "system", "content": "Be brief."}] + CONVERSATION + [{"role": "assistant", "content": "Red."}]
    for tokenizer in (bundled, tiny):
        data = foundry_inference_model(tokenizer, "my-model")
        assert data["Name"] == "my-model" and set(data["PromptTemplate"]) == {"system", "user", "assistant", "prompt"}
        template = data["PromptTemplate"]
        assert template["prompt"].replace("{Content}", "Name a colour.") == tokenizer.apply_chat_template(
            CONVERSATION[:1], tokenize=False, add_generation_prompt=True)
        assert "".join(template[m["role"]].replace("{Content}", m["content"]) for m in messages) == \
            tokenizer.apply_chat_template(messages, tokenize=False)


def test_tiny_gguf_exports_are_read_back_within_rounding_and_chat_like_their_source(tiny_engine):
    greedy = GenerationParams(temperature=0.0, max_new_tokens=12)
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    source_text = "".join(c.text for c in tiny_engine.chat("tiny", prompt, greedy))
    results = {}
    for qtype in ("f16", "q8_0"):
        run = tiny_engine.wait_run(tiny_engine.start_run(GgufConfig(model_id="tiny", gguf_type=qtype,
                                                                    verify_tokens=512)), timeout=600)
        assert run.status.value == "succeeded", (run.error, [m.message for m in tiny_engine.run_logs(run.id)])
        results[qtype] = run.summary
        model = tiny_engine.get_model(f"tiny-gguf-{qtype}")
        assert model.format == ModelFormat.GGUF and model.parent_id == "tiny"
        assert {p.name for p in Path(model.path).iterdir()} == {GGUF_FILE, MODELFILE}
    # f16 is within half-precision rounding of the source's logits; q8_0 close; both pick the same tokens
    assert results["f16"]["max_logit_diff"] < 0.01 and results["f16"]["top1_agreement"] >= 0.99
    assert results["q8_0"]["max_logit_diff"] < 0.1 and results["q8_0"]["top1_agreement"] >= 0.95
    assert results["f16"]["first_token_agreement"] == 1.0 and abs(results["f16"]["ppl_ratio"] - 1) < 1e-3
    assert results["q8_0"]["size_mb"] < results["f16"]["size_mb"]
    # a registered GGUF chats through transformers' GGUF reader like its source
    assert "".join(c.text for c in tiny_engine.chat("tiny-gguf-f16", prompt, greedy)) == source_text


def test_what_cannot_be_a_gguf_is_refused_before_a_run(tiny_engine, tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}')
    with pytest.raises(InvalidInput, match="GPT2LMHeadModel.*ONNX Runtime GenAI"):
        check_architecture(tmp_path)
    tiny_engine.store.add_model(id="tiny-onnx", format=ModelFormat.ONNX, path=str(tmp_path), source="run",
                                source_ref="test", status="ready", parent_id="tiny", architecture="llama")
    with pytest.raises(InvalidInput, match="ONNX export: GGUF needs its torch weights.*'tiny'"):
        tiny_engine.check(GgufConfig(model_id="tiny-onnx"))
    with pytest.raises(InvalidInput, match="already exists"):
        tiny_engine.check(GgufConfig(model_id="tiny", output_name="tiny"))
