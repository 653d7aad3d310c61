"""An OpenAI-compatible HTTP API for registered models: `GET /v1/models`, `POST /v1/chat/completions` (streaming
with server-sent events, or one JSON reply). Errors use OpenAI's JSON shape. Binds to 127.0.0.1 unless told otherwise;
an API key can be required (`Authorization: Bearer KEY`). Every chat request is recorded in the workspace database
and in Prometheus metrics (`GET /metrics`, engine/serve_monitor.py); `GET /health` answers without a key."""
from __future__ import annotations

import contextlib
import hmac
import json
import threading
import time
import uuid
from typing import Literal

from fastapi import Request  # module level: FastAPI resolves the (string) annotations of the routes here
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .configs import GenerationParams
from .errors import Busy, InvalidInput, NotFound, SlmopsError


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


def create_app(engine, model_ids: list[str], api_key: str | None = None, server: str = "127.0.0.1:8000",
               record_prompts: bool = False):
    """The API app; `server` names it in the request records (host:port), `record_prompts` keeps each request's
    last message in its record (off by default: prompts may be private)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    from .serve_monitor import RequestLog, ServeMetrics, Tracked

    for model_id in model_ids:
        engine.ready_model(model_id)  # refuse to start on a missing or unready model
    created = int(time.time())
    metrics, log = ServeMetrics(), RequestLog(engine.store, server)

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

        def refuse(status: int, message: str, kind: str, param: str | None = None, code: str | None = None):
            tracked.fail("refused" if status < 500 else "error", message)
            return fail(status, message, kind, param, code)

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
        stop = threading.Event()
        try:
            chunks = engine.chat(req.model, messages, params, stop)
        except (InvalidInput, NotFound) as exc:
            return refuse(400, str(exc), "invalid_request_error")
        except Busy as exc:
            return refuse(503, str(exc), "server_error")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(sse_events(chunks, stop, stops, completion_id, req.model, params, include_usage,
                                                tracked), media_type="text/event-stream")
        try:
            text, last, scanner = await run_in_threadpool(collect, chunks, stop, stops)
        except SlmopsError as exc:
            return refuse(400, str(exc), "invalid_request_error")
        except BaseException as exc:
            tracked.fail("error", str(exc) or type(exc).__name__)
            raise
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
               params: GenerationParams, include_usage: bool, tracked=None):
    def event(delta: dict, reason: str | None = None, **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}] if delta is not None else [],
                **extra}
        return f"data: {json.dumps(body)}\n\n"

    scanner, last, ended = StopScanner(stops), None, False
    yield event({"role": "assistant", "content": ""})
    try:
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
        if tracked is not None and ended:
            tracked.ok(last)
        elif tracked is not None:  # the client went away: the generator was closed mid-stream
            tracked.fail("disconnected", "the client went away mid-stream")
    yield event({}, finish_reason(last, scanner, params))
    if include_usage:
        yield event(None, usage=usage(last))
    yield "data: [DONE]\n\n"


def serve(engine, model_ids: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          record_prompts: bool = False):
    import uvicorn

    app = create_app(engine, model_ids, api_key, f"{host}:{port}", record_prompts)
    uvicorn.run(app, host=host, port=port, log_level="info")


class BackgroundServer:
    """The API served from a thread of this process (the UI's "Serve" control); stop() ends it."""

    def __init__(self, engine, model_ids: list[str], host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, record_prompts: bool = False):
        import uvicorn

        self.model_ids, self.host, self.port, self.api_key = list(model_ids), host, int(port), api_key or None
        app = create_app(engine, self.model_ids, self.api_key, f"{host}:{port}", record_prompts)
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
