"""The OpenAI-compatible server, driven by the official `openai` client: listing, streaming and non-streaming
replies, stop sequences, errors in OpenAI's shape, an API key, two requests at once, and every request recorded
(SQLite rows, Prometheus /metrics, /health)."""
import asyncio
import socket
import threading
import time

import httpx
import openai
import pytest

from engine.errors import InvalidInput
from engine.serve import Admission, StopScanner, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_engine):
    import uvicorn

    servers = []

    def start(api_key=None, record_prompts=False, **limits):
        port = free_port()
        app = create_app(tiny_engine, ["tiny"], api_key=api_key, server=f"127.0.0.1:{port}",
                         record_prompts=record_prompts, **limits)
        start.apps.append(app)
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        servers.append((srv, thread))
        return f"http://127.0.0.1:{port}/v1"

    start.apps = []
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


def test_admission_gives_slots_in_arrival_order_and_turns_away_past_the_queue():
    async def scenario():
        admission = Admission(limit=1, queue_limit=1)
        first = await admission.enter()
        second = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        assert admission.active == 1 and len(admission.waiting) == 1 and not second.done()
        assert await admission.enter() is None and admission.retry_after() >= 1  # the queue is full
        first()
        first()  # a second release of one slot changes nothing
        release = await asyncio.wait_for(second, 1)
        assert admission.active == 1 and not admission.waiting
        waiting = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        waiting.cancel()  # a client gone while queued leaves the queue
        await asyncio.gather(waiting, return_exceptions=True)
        assert not admission.waiting
        release()
        await asyncio.sleep(0)
        assert admission.active == 0

    asyncio.run(scenario())
    with pytest.raises(InvalidInput, match="at least 1"):
        Admission(limit=0)


@pytest.mark.parametrize("via", ["app", "engine"])  # engine: Engine.start_server, as the Serve tab starts it
def test_busy_server_queues_then_answers_429_with_retry_after(server, tiny_engine, monkeypatch, via):
    gate, real_chat = threading.Event(), tiny_engine.chat

    def held_chat(*args, **kwargs):  # the real model's reply, released when the test opens the gate
        gate.wait(30)
        yield from real_chat(*args, **kwargs)

    monkeypatch.setattr(tiny_engine, "chat", held_chat)
    if via == "engine":
        base = tiny_engine.start_server(["tiny"], port=free_port(), max_concurrency=1, max_queue=1).url
    else:
        base = server(max_concurrency=1, max_queue=1)
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
    replies = {}

    def ask(i):
        stream = client.chat.completions.create(model="tiny", stream=True, max_tokens=8, temperature=0,
                                                messages=[{"role": "user", "content": "Hello"}])
        replies[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.5)  # the first holds the slot, the second waits in the queue
    metrics = httpx.get(base.replace("/v1", "/metrics")).text
    assert "slmops_requests_queued 1.0" in metrics
    busy = httpx.post(f"{base}/chat/completions", json={"model": "tiny", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "Hi"}]})
    assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
    assert busy.json()["error"]["type"] == "rate_limit_error" and "retry in about" in busy.json()["error"]["message"]
    gate.set()
    for t in threads:
        t.join(timeout=60)
    assert replies[0] == replies[1] and replies[0]  # both answered, the queued one after the first
    assert "slmops_requests_queued 0.0" in httpx.get(base.replace("/v1", "/metrics")).text
    for port in [s.port for s in tiny_engine.servers()]:
        tiny_engine.stop_server(port)


def test_stop_scanner_cuts_at_stop_strings_across_chunks():
    scanner = StopScanner(["END"])
    sent = scanner.feed("Hello E") + scanner.feed("Hello EN") + scanner.feed("Hello ENDmore")
    assert sent == "Hello " and scanner.stopped
    plain = StopScanner([])
    assert plain.feed("abc") + plain.feed("abcd", final=True) == "abcd"


def test_every_request_is_recorded_and_counted(server, tiny_engine):
    from engine.serve_monitor import RequestLog, ServeMetrics, Tracked

    base = server(api_key="k")
    app = server.apps[-1]
    client = openai.OpenAI(base_url=base, api_key="k")
    assert httpx.get(base.replace("/v1", "/health")).json() == {"status": "ok", "models": ["tiny"]}  # no key needed

    def ask(stream: bool):
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=6, temperature=0, stream=stream)
        if stream:
            for _ in reply:
                pass

    threads = [threading.Thread(target=ask, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], temperature=3)
    app.state.request_log.flush()
    server_name = base.split("//")[1].removesuffix("/v1")
    rows = [r for r in tiny_engine.served_requests() if r["server"] == server_name]
    assert len(rows) == 8  # every request sent, answered or refused
    done = [r for r in rows if r["status"] == "ok"]
    assert len(done) == 6 and {r["status"] for r in rows} == {"ok", "refused"}
    assert all(r["completion_tokens"] >= 1 and r["prompt_tokens"] > 0 and r["total_s"] > 0 and r["ttft_s"] is not None
               and r["finished_at"] >= r["started_at"] and r["prompt_text"] is None for r in done)
    assert {r["model"] for r in rows} == {"tiny", "nope"}
    assert "does not exist" in next(r["error"] for r in rows if r["model"] == "nope")
    metrics = httpx.get(base.replace("/v1", "/metrics"), headers={"Authorization": "Bearer k"}).text
    assert 'slmops_requests_total{model="tiny",status="ok"} 6.0' in metrics
    assert 'slmops_requests_total{model="nope",status="refused"} 1.0' in metrics
    assert 'slmops_request_seconds_count{model="tiny"} 7.0' in metrics  # 6 answered + 1 refused
    assert 'slmops_time_to_first_token_seconds_count{model="tiny"} 6.0' in metrics
    assert 'slmops_requests_in_flight{model="tiny"} 0.0' in metrics

    # a server that died leaves its rows "running": the next one at its address marks them interrupted
    log = RequestLog(tiny_engine.store, "test:1")
    rid = log.begin("tiny")
    log.flush()
    RequestLog(tiny_engine.store, "test:1").close()
    assert next(r for r in tiny_engine.served_requests() if r["id"] == rid)["status"] == "interrupted"
    # a reply waits for its row's commit (`stored`), so a killed server has a row for every request it acknowledged
    slow = RequestLog(tiny_engine.store, "test:2", flush_s=0.3)  # the writer lets a burst gather for 0.3 s
    rid = slow.begin("tiny")
    asyncio.run(slow.stored(rid))
    assert any(r["id"] == rid for r in tiny_engine.served_requests())
    slow.close()
    # what recording costs a request: a row queued at its start and its end, the metrics updated
    metrics_ = ServeMetrics()
    t0 = time.perf_counter()
    for _ in range(500):
        Tracked.start(log, metrics_, "tiny").fail("refused", "x")
    per_request_ms = (time.perf_counter() - t0) / 500 * 1000
    log.close()
    assert per_request_ms < 1.0, per_request_ms


def test_prompt_text_is_kept_only_when_asked_and_an_empty_period_says_so(server, tiny_engine):
    from slmops_ui.tabs.serve import monitoring

    fig, line, table = monitoring(tiny_engine, "tiny", "last 15 minutes")
    assert fig is None and table == [] and line == "No requests to tiny in this period (last 15 minutes)."
    base = server(record_prompts=True)
    openai.OpenAI(base_url=base, api_key="unused").chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Private words"}], max_tokens=2)
    server.apps[-1].state.request_log.flush()
    assert tiny_engine.served_requests("tiny")[0]["prompt_text"] == "Private words"
    fig, line, table = monitoring(tiny_engine, "tiny", "last 15 minutes")
    assert fig is not None and line.startswith("**1 request** in this period") and table[0][2:4] == ["tiny", "ok"]
