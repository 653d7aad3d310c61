import threading

import pytest

from engine import GenerationParams, InvalidInput, SelfTestConfig


def test_streaming_reply_grows_and_reports_speed(tiny_engine):
    params = GenerationParams(temperature=0.0, max_new_tokens=12)
    chunks = list(tiny_engine.chat("tiny", [{"role": "user", "content": "Hello"}], params))
    assert len(chunks) >= 3
    texts = [c.text for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # streamed, each chunk extends the last
    final = chunks[-1]
    assert final.done and 1 <= final.new_tokens <= 12
    assert final.tokens_per_s and final.tokens_per_s > 0


def test_model_stays_loaded_between_messages(tiny_engine):
    params = GenerationParams(temperature=0.0, max_new_tokens=2)
    list(tiny_engine.chat("tiny", [{"role": "user", "content": "a"}], params))
    assert tiny_engine.loaded_models() == ["tiny"]
    list(tiny_engine.chat("tiny", [{"role": "user", "content": "b"}], params))
    assert tiny_engine.loaded_models() == ["tiny"]


def test_stop_event_ends_generation_early(tiny_engine):
    stop = threading.Event()
    params = GenerationParams(temperature=1.0, max_new_tokens=200)
    seen = 0
    final = None
    for chunk in tiny_engine.chat("tiny", [{"role": "user", "content": "Tell me a story"}], params, stop):
        seen += 1
        if seen == 2:
            stop.set()
        final = chunk
    assert final.done and final.new_tokens < 200


def test_greedy_replies_are_independent_per_conversation(tiny_engine):
    params = GenerationParams(temperature=0.0, max_new_tokens=8)
    convo = [{"role": "user", "content": "Hello"}]
    first = list(tiny_engine.chat("tiny", convo, params))[-1].text
    other = list(tiny_engine.chat("tiny", [{"role": "user", "content": "Quantization"}], params))[-1].text
    again = list(tiny_engine.chat("tiny", convo, params))[-1].text
    assert first == again  # nothing of the other conversation leaked into this one
    assert isinstance(other, str)


def test_chat_input_errors(tiny_engine):
    with pytest.raises(InvalidInput, match="Type a message"):
        tiny_engine.chat("tiny", [], GenerationParams())
    long_text = "word " * 2000  # the tiny model's context is 256 tokens
    with pytest.raises(InvalidInput, match="longer than the model's context"):
        list(tiny_engine.chat("tiny", [{"role": "user", "content": long_text}], GenerationParams()))


def test_selftest_job_records_speed(tiny_engine):
    rid = tiny_engine.start_run(SelfTestConfig(model_id="tiny", prompts=["Hi", "Paris?"], max_new_tokens=4))
    run = tiny_engine.wait_run(rid, timeout=120)
    assert run.status.value == "succeeded", run.error
    names = {m.name for m in tiny_engine.run_metrics(rid)}
    assert {"load_s", "new_tokens", "decode_tok_s"} <= names
    assert run.summary["decode_tok_s"] > 0


@pytest.mark.real
def test_real_bundled_model_knows_paris(real_engine):
    model = real_engine.get_model("smollm2-135m-instruct")
    assert model.ready and model.source == "bundled" and model.architecture == "LlamaForCausalLM"
    assert 134_000_000 < model.params < 135_000_000
    params = GenerationParams(temperature=0.0, max_new_tokens=24)
    final = list(real_engine.chat(model.id, [{"role": "user", "content": "What is the capital of France?"}],
                                  params))[-1]
    assert "Paris" in final.text
