"""An OpenAI-compatible HTTP API for registered models: `GET /v1/models`, `POST /v1/chat/completions` (streaming
with server-sent events, or one JSON reply). Errors use OpenAI's JSON shape. Binds to 127.0.0.1 unless told otherwise;
an API key can be required (`Authorization: Bearer KEY`). Every chat request is recorded in the workspace database
and in Prometheus metrics (`GET /metrics`, engine/serve_monitor.py); `GET /health` answers without a key."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import math
import threading
import time
import uuid
from typing import Literal

from fastapi import Request  # module level: FastAPI resolves the (string) annotations of the routes here
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .configs import GenerationParams
from .errors import Busy, InvalidInput, NotFound, SlmopsError
from .serve_monitor import MAX_CONCURRENCY, MAX_QUEUE, RequestLog, ServeMetrics, Tracked


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completion request we honour; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream_options: dict | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise InvalidInput("stop: give at most 4 non-empty strings")
        return stops


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class StopScanner:
    """Cuts streamed text at the first stop string, holding back a tail that could still become one."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.sent = 0
        self.stopped = False

    def feed(self, text: str, final: bool = False) -> str:
        """New text safe to send, given the whole text so far."""
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            end = cut
        else:
            end = len(text) if final else max(self.sent, len(text) - self.hold)
        piece = text[self.sent:end]
        self.sent = max(self.sent, end)
        return piece


class Admission:
    """Back-pressure: at most `limit` requests generate at once; up to `queue_limit` more wait their turn in arrival
    order; past that a request is turned away (429, with a Retry-After from recent request times). State changes
    happen on the event loop; a slot is given back from any thread (the streaming generator ends in a worker)."""

    def __init__(self, limit: int = MAX_CONCURRENCY, queue_limit: int = MAX_QUEUE):
        if limit < 1:
            raise InvalidInput(f"max concurrency {limit}: at least 1 request must be able to run; use 1 or more.")
        if queue_limit < 0:
            raise InvalidInput(f"max queue {queue_limit}: use 0 (refuse when all slots are busy) or more.")
        self.limit, self.queue_limit = limit, queue_limit
        self.active, self.waiting = 0, collections.deque()
        self.seconds = 2.0  # moving average of a request's time in a slot, for Retry-After
        self._loop: asyncio.AbstractEventLoop | None = None

    async def enter(self):
        """A release function once a slot is held, or None when the queue is full."""
        self._loop = asyncio.get_running_loop()
        if self.active < self.limit and not self.waiting:
            self.active += 1
        elif len(self.waiting) >= self.queue_limit:
            return None
        else:
            turn = self._loop.create_future()
            self.waiting.append(turn)
            try:
                await turn  # a finishing request hands its slot over (active stays the same)
            except asyncio.CancelledError:  # the client left while waiting
                if turn.done() and not turn.cancelled():
                    self._leave(0.0)  # the slot was handed over just now: pass it on
                else:
                    self.waiting.remove(turn)
                raise
        t0, released = time.perf_counter(), threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._loop.call_soon_threadsafe(self._leave, time.perf_counter() - t0)
        return release

    def _leave(self, seconds: float) -> None:
        if seconds:
            self.seconds = 0.8 * self.seconds + 0.2 * seconds
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.active -= 1

    def retry_after(self) -> int:
        """Seconds until a slot is likely free for one more request."""
        return max(1, math.ceil(self.seconds * (len(self.waiting) + 1) / self.limit))


def create_app(engine, model_ids: list[str], api_key: str | None = None, server: str = "127.0.0.1:8000",
               record_prompts: bool = False, max_concurrency: int = MAX_CONCURRENCY, max_queue: int = MAX_QUEUE,
               adapters: list[str] = ()):
    """The API app; `server` names it in the request records (host:port), `record_prompts` keeps each request's
    last message in its record (off by default: prompts may be private); `max_concurrency` requests generate at
    once, `max_queue` more wait, further ones get 429. `adapters`: served as MODEL:ADAPTER for each listed export that
    has them (engine/model_refs.py)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    admission = Admission(max_concurrency, max_queue)  # refuses a limit below 1 before anything else
    # refuse to start on a missing or unready model (or adapter)
    model_ids = engine.serve_refs(model_ids, adapters)
    created = int(time.time())
    metrics, log = ServeMetrics(), RequestLog(engine.store, server)
    metrics.queued.set_function(lambda: len(admission.waiting))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        log.close()  # the records of the last requests are stored before the server ends

    app = FastAPI(title="SLMOps Studio OpenAI-compatible API", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.request_log = log

    def fail(status: int, message: str, kind: str, param: str | None = None, code: str | None = None):
        return JSONResponse(error_body(message, kind, param, code), status_code=status)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                return fail(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                            "invalid_request_error", code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):
        return fail(400, f"Invalid request: {exc.errors()[0].get('msg', exc)}", "invalid_request_error")

    @app.get("/health")
    def health():
        return {"status": "ok", "models": model_ids}

    @app.get("/metrics")
    def prometheus_metrics():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "slmops"}
                                           for m in model_ids]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else ""
        last_message = body.get("messages") if isinstance(body, dict) else None
        prompt = (str(last_message[-1].get("content", ""))[:4000] if record_prompts and isinstance(last_message, list)
                  and last_message and isinstance(last_message[-1], dict) else None)
        tracked = Tracked.start(log, metrics, model[:200], prompt)

        def refuse(status: int, message: str, kind: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None):
            tracked.fail("refused" if status < 500 else "error", message)
            response = fail(status, message, kind, param, code)
            response.headers.update(headers or {})
            return response

        if body is None:
            return refuse(400, "The request body is not valid JSON.", "invalid_request_error")
        try:
            req = ChatRequest.model_validate(body)
            stops = req.stops()
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ()))
            return refuse(400, f"Invalid value for '{param}': {first.get('msg')}", "invalid_request_error", param)
        except InvalidInput as exc:
            return refuse(400, str(exc), "invalid_request_error", "stop")
        if req.model not in model_ids:
            return refuse(404, f"The model '{req.model}' does not exist here; GET /v1/models lists the served ones.",
                          "invalid_request_error", "model", "model_not_found")
        if req.messages[-1].role != "user":
            return refuse(400, "The last message must come from the user.", "invalid_request_error", "messages")
        params = GenerationParams(temperature=req.temperature, top_p=req.top_p,
                                  max_new_tokens=req.max_completion_tokens or req.max_tokens or 256)
        messages = [m.model_dump() for m in req.messages]
        try:
            release = await admission.enter()
        except asyncio.CancelledError:
            tracked.fail("disconnected", "the client went away while queued")
            raise
        if release is None:
            wait = admission.retry_after()
            return refuse(429, f"All {admission.limit} generation slots are busy and {admission.queue_limit} requests "
                          f"are waiting; retry in about {wait} s.", "rate_limit_error", code="server_busy",
                          headers={"Retry-After": str(wait)})
        tracked.queued_s = time.perf_counter() - tracked.t0
        stop = threading.Event()
        try:
            chunks = engine.chat(req.model, messages, params, stop, batch=admission.limit)
        except (InvalidInput, NotFound) as exc:
            release()
            return refuse(400, str(exc), "invalid_request_error")
        except Busy as exc:
            release()
            return refuse(503, str(exc), "server_error")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        await log.stored(tracked.rid)  # acknowledged only once recorded (engine/serve_monitor.py)
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(sse_events(chunks, stop, stops, completion_id, req.model, params, include_usage,
                                                tracked, release), media_type="text/event-stream")
        try:
            text, last, scanner = await run_in_threadpool(collect, chunks, stop, stops)
        except SlmopsError as exc:
            return refuse(400, str(exc), "invalid_request_error")
        except BaseException as exc:
            stop.set()  # e.g. the client went away: the generation ends at its next token
            tracked.fail("error", str(exc) or type(exc).__name__)
            raise
        finally:
            release()
        tracked.ok(last)
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish_reason(last, scanner, params)}],
                "usage": usage(last)}

    return app


def collect(chunks, stop: threading.Event, stops: list[str]):
    scanner, text, last = StopScanner(stops), "", None
    for last in chunks:
        text += scanner.feed(last.text, final=last.done)
        if scanner.stopped:
            stop.set()
    return text, last, scanner


def finish_reason(last, scanner: StopScanner, params: GenerationParams) -> str:
    if scanner.stopped or last is None:
        return "stop"
    return "length" if last.new_tokens >= params.max_new_tokens else "stop"


def usage(last) -> dict:
    prompt = (last.prompt_tokens if last is not None else 0) or 0
    completion = last.new_tokens if last is not None else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse_events(chunks, stop: threading.Event, stops: list[str], completion_id: str, model: str,
               params: GenerationParams, include_usage: bool, tracked=None, release=None):
    def event(delta: dict, reason: str | None = None, **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}] if delta is not None else [],
                **extra}
        return f"data: {json.dumps(body)}\n\n"

    scanner, last, ended = StopScanner(stops), None, False
    try:  # from the first event on: a client gone after it still ends the record and frees the slot
        yield event({"role": "assistant", "content": ""})
        for last in chunks:
            piece = scanner.feed(last.text, final=last.done)
            if piece:
                yield event({"content": piece})
            if scanner.stopped:
                stop.set()
        ended = True
    except SlmopsError as exc:
        if tracked is not None:
            tracked.fail("error", str(exc))
        yield f"data: {json.dumps(error_body(str(exc), 'invalid_request_error'))}\n\n"
    finally:
        stop.set()  # a client that went away stops the generation at the next token
        if release is not None:
            release()  # the generation slot goes to the next waiting request
        if tracked is not None and ended:
            tracked.ok(last)
        elif tracked is not None:  # the client went away: the generator was closed mid-stream
            tracked.fail("disconnected", "the client went away mid-stream")
    yield event({}, finish_reason(last, scanner, params))
    if include_usage:
        yield event(None, usage=usage(last))
    yield "data: [DONE]\n\n"


def serve(engine, model_ids: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          record_prompts: bool = False, max_concurrency: int = MAX_CONCURRENCY, max_queue: int = MAX_QUEUE,
          adapters: list[str] = ()):
    import uvicorn

    app = create_app(engine, model_ids, api_key, f"{host}:{port}", record_prompts, max_concurrency, max_queue,
                     adapters)
    uvicorn.run(app, host=host, port=port, log_level="info")


class BackgroundServer:
    """The API served from a thread of this process (the UI's "Serve" control); stop() ends it."""

    def __init__(self, engine, model_ids: list[str], host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, record_prompts: bool = False, max_concurrency: int = MAX_CONCURRENCY,
                 max_queue: int = MAX_QUEUE):
        import uvicorn

        self.model_ids, self.host, self.port, self.api_key = list(model_ids), host, int(port), api_key or None
        app = create_app(engine, self.model_ids, self.api_key, f"{host}:{port}", record_prompts, max_concurrency,
                         max_queue)
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name=f"slmops-serve-{port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 15.0) -> "BackgroundServer":
        import socket

        with socket.socket() as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise InvalidInput(f"Cannot listen on {self.host}:{self.port} ({exc.strerror}); choose another "
                                   "port.") from None
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._server.started:
            self.stop()
            raise InvalidInput(f"The server on {self.host}:{self.port} did not start.")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
