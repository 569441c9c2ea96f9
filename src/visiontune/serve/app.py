"""The HTTP API and page of `visiontune serve`: FastAPI on one loaded model behind a dynamic batcher.

    GET  /                      the web page (pick or drop an image; caption, class probabilities or boxes)
    GET  /health                model, task, mode, classes
    GET  /metrics               Prometheus text: requests, errors, latency histogram, batch sizes
    GET  /v1/models             OpenAI-style model list
    POST /v1/chat/completions   OpenAI-compatible; images as image_url parts (data URLs; http(s) if allowed);
                                temperature / top_p / seed, max_tokens and stop per request, stream=true
    POST /v1/predict            the rows `visiontune predict` writes: multipart file(s), or JSON
                                {"image": base64 | data URL | URL} / {"images": [...]}

Every bad request gets a 4xx JSON error naming the problem ({"error": {"message", "type"}}); nothing reads
files on the server; the API key (when set) guards /v1/* and /metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import serve_defaults as defaults
from ..inference.protocol import Sampling
from .batcher import DynamicBatcher
from .intake import IntakeLimits, RequestError, decode_image, image_from_reference
from .served_model import ServedModel

logger = logging.getLogger("visiontune.serve")
DEFAULT_MAX_TOKENS = 64


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = defaults.MAX_BATCH
    max_wait_ms: float = defaults.MAX_WAIT_MS
    api_key: str | None = None
    max_body_bytes: int = int(defaults.MAX_BODY_MB * 2**20)
    max_images_per_request: int = defaults.MAX_IMAGES_PER_REQUEST
    limits: IntakeLimits = field(default_factory=IntakeLimits)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 (declared length or counted as it arrives)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, 413, f"request body of {int(declared)} bytes is over the "
                                                f"{self.limit} byte limit")
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise RequestError(413, f"request body is over the {self.limit} byte limit")
            return message

        return await self.app(scope, counted, send)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    return registry, {
        "requests": Counter("visiontune_requests", "HTTP requests", ["endpoint", "status"], registry=registry),
        "errors": Counter("visiontune_errors", "requests answered with an error", ["endpoint", "status"],
                          registry=registry),
        "latency": Histogram("visiontune_request_seconds", "request latency", ["endpoint"], registry=registry,
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
        "batch": Histogram("visiontune_batch_size", "requests per model batch", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64)),
    }


def _chat_conversation(body: dict, limits: IntakeLimits, max_images: int) -> tuple[list, list[dict]]:
    """OpenAI messages -> (images, visiontune chat messages with {"type": "image"} parts where they were)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list")
    images, converted = [], []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise RequestError(400, f"messages[{index}]: needs a role of system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = []
            for number, part in enumerate(content):
                where = f"messages[{index}].content[{number}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    images.append(image_from_reference(url, limits, f"{where}.image_url"))
                    parts.append({"type": "image"})
                else:
                    raise RequestError(400, f"{where}: unknown content part type {kind!r} (use text or image_url)")
        else:
            raise RequestError(400, f"messages[{index}].content must be a string or a list of parts")
        converted.append({"role": message["role"], "content": parts})
    if not images:
        raise RequestError(400, "no image in the conversation: add an image_url part")
    if len(images) > max_images:
        raise RequestError(413, f"{len(images)} images is over the limit of {max_images} per request")
    return images, converted


def create_app(model: ServedModel, options: ServeOptions | None = None) -> FastAPI:
    options = options or ServeOptions()
    registry, metrics = _metrics()

    def run(key, items: list) -> list:
        if key[0] == "predict":
            return model.results(items, threshold=key[1], model=key[2])
        _, sampling, name = key  # items: (images, messages, max_tokens, stop strings, sink for streamed text)
        return model.chat([images if len(images) > 1 else images[0] for images, *_ in items],
                          [item[1] for item in items], [item[2] for item in items], sampling,
                          [item[3] for item in items], [item[4] for item in items], model=name)

    batcher = DynamicBatcher(run, options.max_batch, options.max_wait_ms, on_batch=metrics["batch"].observe)

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="visiontune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str, kind: str = "invalid_request_error"):
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    @app.exception_handler(RequestError)
    async def request_error(_request, exc: RequestError):
        return error(exc.status, exc.message, exc.kind)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):  # unknown routes, wrong methods
        message = {404: f"no route {request.url.path}; see GET / for the page and /v1/models for the API",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, message, "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        return error(400, f"malformed request: {exc.errors()[:3]}")

    @app.exception_handler(Exception)
    async def server_error(_request, exc: Exception):
        logger.exception("unexpected error while serving a request")
        return error(500, "internal error (see the server log)", "server_error")

    app.add_middleware(BodyLimit, limit=options.max_body_bytes)  # inside the next one, so its 413s are counted

    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next):
        started = time.perf_counter()
        endpoint = request.url.path if request.url.path in routes else "other"
        protected = endpoint.startswith("/v1/") or endpoint == "/metrics"
        if protected and options.api_key and not _key_ok(request, options.api_key):
            response = error(401, "missing or wrong API key (Authorization: Bearer KEY, or X-API-Key)",
                             "authentication_error")
        else:
            response = await call_next(request)
        status = str(response.status_code)
        metrics["requests"].labels(endpoint, status).inc()
        if response.status_code >= 400:
            metrics["errors"].labels(endpoint, status).inc()
        metrics["latency"].labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (resources.files("visiontune.serve") / "static" / "index.html").read_text()

    @app.get("/health")
    async def health():
        return {"status": "ok", **model.describe()}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "visiontune"}
                                           for name in model.names]}

    @app.post("/v1/predict")
    async def predict(request: Request):
        images, names = await _request_images(request, options)
        threshold, name = _threshold(request), request.query_params.get("model")
        predictor = model.pick(name) if model.predictor is not None else None  # an unknown name: 404 before work
        rows = await asyncio.gather(*(batcher.submit(("predict", threshold, name), image) for image in images))
        return {"model": name or model.name, "task": predictor.task.name if predictor else model.task,
                "results": [{"image": name, **row} for name, row in zip(names, rows)]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _json_body(request)
        if body.get("n", 1) != 1:
            raise RequestError(400, "only n=1 is supported")
        max_tokens, sampling, stops = _generation_settings(body)
        images, conversation = _chat_conversation(body, options.limits, options.max_images_per_request)
        if not model.can_chat:
            raise RequestError(400, "this server runs a dedicated detector: use POST /v1/predict")
        name = body.get("model") if isinstance(body.get("model"), str) and len(model.names) > 1 else None
        model.pick(name)  # an unknown name: 404 before any work
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": body.get("model") or model.name}
        if body.get("stream"):
            loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
            sink = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)  # from the model's thread
            reply = asyncio.ensure_future(batcher.submit(("chat", sampling, name),
                                                         (images, conversation, max_tokens, stops, sink)))
            return StreamingResponse(_stream_chunks(head, pieces, reply), media_type="text/event-stream")
        reply = await batcher.submit(("chat", sampling, name), (images, conversation, max_tokens, stops, None))
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply["text"]},
                             "finish_reason": reply["finish_reason"]}],
                "usage": {"completion_tokens": reply["completion_tokens"]}}

    routes = {route.path for route in app.routes}  # the metrics' endpoint label: a known path, else "other"
    return app


async def _stream_chunks(head: dict, pieces: asyncio.Queue, reply: asyncio.Future):
    """`stream=true`: server-sent chat.completion.chunk events, one per piece of text as the model writes it,
    then the finish reason and [DONE] (an error after the first event arrives as an `error` event)."""
    chunk = {**head, "object": "chat.completion.chunk"}

    def event(delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n"

    yield event({"role": "assistant", "content": ""})
    while not reply.done() or not pieces.empty():
        getter = asyncio.ensure_future(pieces.get())
        await asyncio.wait({getter, reply}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield event({"content": getter.result()})
        else:
            getter.cancel()
    if reply.exception() is not None:
        yield f"data: {json.dumps({'error': {'message': str(reply.exception()), 'type': 'server_error'}})}\n\n"
    else:
        yield event({}, reply.result()["finish_reason"])
    yield "data: [DONE]\n\n"


def _generation_settings(body: dict) -> tuple[int, Sampling, list[str]]:
    """(max_tokens, sampling, stop strings) of a chat request, as OpenAI's API names them; greedy by default."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 4096:
        raise RequestError(400, "max_tokens must be an integer from 1 to 4096")
    temperature, top_p, seed = body.get("temperature", 0), body.get("top_p", 1), body.get("seed")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise RequestError(400, "temperature must be a number from 0 to 2")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
        raise RequestError(400, "top_p must be a number above 0 and at most 1")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(400, "seed must be an integer")
    stop = body.get("stop") or []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) for s in stops):
        raise RequestError(400, "stop must be a string or a list of up to 4 strings")
    return max_tokens, Sampling(float(temperature), float(top_p), seed), stops


def _threshold(request) -> float | None:
    """`?threshold=` on /v1/predict: keep boxes scored at least this (default: the run's threshold)."""
    given = request.query_params.get("threshold")
    if given is None:
        return None
    try:
        value = float(given)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise RequestError(400, f"threshold must be a number from 0 to 1, got {given!r}")
    return value


def _key_ok(request, key: str) -> bool:
    given = request.headers.get("x-api-key") or ""
    authorization = request.headers.get("authorization") or ""
    if authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    return hmac.compare_digest(given.encode(), key.encode())


async def _json_body(request) -> dict:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not valid JSON ({error})") from error
    if not isinstance(body, dict):
        raise RequestError(400, "the JSON body must be an object")
    return body


async def _request_images(request, options: ServeOptions) -> tuple[list, list[str]]:
    """(images, names) from a multipart upload (field `file`, repeatable) or JSON image / images."""
    content_type = request.headers.get("content-type", "")
    images, names = [], []
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        uploads = [value for key, value in form.multi_items() if key in ("file", "files", "image")]
        if not uploads or any(isinstance(u, str) for u in uploads):
            raise RequestError(400, "multipart requests carry the image as a file field named 'file'")
        for upload in uploads[: options.max_images_per_request + 1]:
            data = await upload.read()
            images.append(decode_image(data, options.limits, upload.filename or "file"))
            names.append(upload.filename or f"file[{len(names)}]")
    else:
        body = await _json_body(request)
        references = body.get("images") if "images" in body else [body.get("image")]
        if not isinstance(references, list) or not references or references == [None]:
            raise RequestError(400, "send {'image': base64 | data URL} or {'images': [...]}, or a multipart file")
        if len(references) > options.max_images_per_request:
            raise RequestError(413, f"{len(references)} images is over the limit of "
                                    f"{options.max_images_per_request} per request")
        for index, reference in enumerate(references):
            images.append(image_from_reference(reference, options.limits, f"images[{index}]"))
            names.append(f"images[{index}]")
    if len(images) > options.max_images_per_request:
        raise RequestError(413, f"over the limit of {options.max_images_per_request} images per request")
    return images, names
