"""The OpenAI-compatible server, driven by the official `openai` client: listing, streaming and non-streaming
replies, stop sequences, errors in OpenAI's shape, an API key, and two requests at once."""
import socket
import threading
import time

import httpx
import openai
import pytest

from engine.serve import StopScanner, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_engine):
    import uvicorn

    servers = []

    def start(api_key=None):
        port = free_port()
        app = create_app(tiny_engine, ["tiny"], api_key=api_key)
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        servers.append((srv, thread))
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for srv, thread in servers:
        srv.should_exit = True
        thread.join(timeout=10)


def test_openai_client_streaming_and_not(server):
    client = openai.OpenAI(base_url=server(), api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]

    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                           max_tokens=8, temperature=0)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage.prompt_tokens > 0 and 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    pieces, reasons = [], []
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == reply.choices[0].message.content  # greedy: the same text both ways
    assert reasons[-1] in {"stop", "length"} and usage.completion_tokens == reply.usage.completion_tokens


def test_errors_in_openai_shape(server):
    base = server()
    client = openai.OpenAI(base_url=base, api_key="unused")
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    assert "nope" in exc.value.body["message"] and exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], temperature=3)
    assert exc.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[], max_tokens=4)
    bad = httpx.post(f"{base}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_api_key_required_when_set(server):
    base = server(api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong").models.list()
    assert [m.id for m in openai.OpenAI(base_url=base, api_key="s3cret").models.list()] == ["tiny"]


def test_two_concurrent_requests(server):
    client = openai.OpenAI(base_url=server(), api_key="unused")
    results, errors = {}, []

    def ask(i):
        try:
            stream = client.chat.completions.create(model="tiny", stream=True, max_tokens=16, temperature=0,
                                                    messages=[{"role": "user", "content": f"Request {i}"}])
            results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and set(results) == {0, 1}
    single = client.chat.completions.create(model="tiny", max_tokens=16, temperature=0,
                                            messages=[{"role": "user", "content": "Request 0"}])
    assert results[0] == single.choices[0].message.content  # concurrency did not mix the two replies


def test_stop_scanner_cuts_at_stop_strings_across_chunks():
    scanner = StopScanner(["END"])
    sent = scanner.feed("Hello E") + scanner.feed("Hello EN") + scanner.feed("Hello ENDmore")
    assert sent == "Hello " and scanner.stopped
    plain = StopScanner([])
    assert plain.feed("abc") + plain.feed("abcd", final=True) == "abcd"
