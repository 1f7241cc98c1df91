"""The FastAPI application: routes, error answers, and the lifespan that runs the batcher and its thread pools."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitkit.serve.batcher import Batched, MicroBatcher, Overloaded, Ticket, describe
from vitkit.serve.engine import Engine, overlay_png
from vitkit.serve.errors import ServeError, error_body
from vitkit.serve.metrics import Metrics
from vitkit.serve.page import page_html
from vitkit.serve.uploads import decode_upload, read_image_bytes

log = logging.getLogger("vitkit.serve")

ENV_SETTINGS = "VITKIT_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@dataclass
class ServeSettings:
    """What `vitkit serve` takes besides the checkpoint's location."""

    source: str = ""
    backend: str | None = None
    device: str = "cpu"
    precision: str | None = None  # torch backend: fp32 | bf16 (None: the checkpoint's, as `vitkit predict`)
    threads: int = 0  # torch / ONNX Runtime intra-op threads (0: the runtime's default)
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_pending: int = 256  # requests admitted at once (decoding, queued or running); past it: 503
    max_upload_mb: float = 10.0
    max_megapixels: float = 40.0
    decode_threads: int = 2
    top_k: int = 5

    @property
    def max_bytes(self) -> int:
        """The upload cap in bytes."""
        return int(self.max_upload_mb * 2**20)

    @property
    def max_pixels(self) -> int:
        """The decoded-size cap in pixels."""
        return int(self.max_megapixels * 1e6)


class Server:
    """The state one app holds for its lifetime (the model, pools, batcher, metrics); none between requests."""

    def __init__(self, engine: Engine, settings: ServeSettings) -> None:
        self.engine, self.settings, self.metrics = engine, settings, Metrics()
        self.decoder = ThreadPoolExecutor(max(1, settings.decode_threads), thread_name_prefix="vitkit-decode")
        self.runner = ThreadPoolExecutor(1, thread_name_prefix="vitkit-model")  # one batch at a time
        self.batcher: MicroBatcher[torch.Tensor, torch.Tensor] = MicroBatcher(
            engine.probabilities,
            self.runner,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_pending=settings.max_pending,
            on_batch=self.metrics.batch,
        )
        self.ready = False

    async def in_thread(self, pool: ThreadPoolExecutor, function: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (decoding, PNG encoding, rollout) in a pool, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    async def classify(self, request: Request, ticket: Ticket) -> tuple[torch.Tensor, Batched[torch.Tensor]]:
        """Read, decode and classify the request's image: its pixels and its batched probabilities."""
        data = await read_image_bytes(request, self.settings.max_bytes)
        pixels = await self.in_thread(self.decoder, self.decode, data)
        return pixels, await self.batcher.submit(pixels, ticket)

    def decode(self, data: bytes) -> torch.Tensor:
        """Encoded bytes -> the (3, S, S) uint8 pixels the model classifies (in a decoding thread)."""
        return self.engine.pixels(decode_upload(data, self.settings.max_pixels))

    def answer(self, pixels: torch.Tensor, batched: Batched[torch.Tensor], top_k: int, started: float) -> dict:
        """The JSON both predict and explain return."""
        engine = self.engine
        return {
            "top_k": engine.top(batched.value, top_k),
            "model": {"name": engine.name, "backend": engine.backend, "sha256": engine.sha256},
            "preprocessing": engine.preprocessing(),
            "input": {"width": int(pixels.shape[-1]), "height": int(pixels.shape[-2])},
            "batch": describe(batched),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The server for one loaded model: API, page, docs, health and metrics."""
    settings = settings or ServeSettings()
    server = Server(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.batcher.start()
        server.ready = True
        log.info("ready: %s (%s), max batch %d, max wait %g ms", engine.name, engine.backend, settings.max_batch,
                 settings.max_wait_ms)  # fmt: skip
        try:
            yield
        finally:
            server.ready = False
            await server.batcher.stop()
            server.decoder.shutdown(wait=True)
            server.runner.shutdown(wait=True)

    app = FastAPI(
        title="vitkit serve",
        version="1",
        description="A vitkit model behind an HTTP API: top-k predictions and attention rollout (paper Fig. 6).",
        lifespan=lifespan,
    )
    app.state.server = server
    install_error_handlers(app, server.metrics)

    app.add_middleware(CountRequests, metrics=server.metrics)

    async def guarded(handler: Callable[[Ticket], Awaitable[Response]]) -> Response:
        """Admission control around a request that uses the model: 503 + Retry-After when the server is full."""
        if not server.ready:
            raise ServeError(503, "not_ready", "the server is starting or shutting down", {"Retry-After": "1"})
        try:
            with server.batcher.admit() as ticket:
                server.metrics.pending.set(server.batcher.pending)
                return await handler(ticket)
        except Overloaded:
            raise ServeError(
                503,
                "overloaded",
                f"{settings.max_pending} requests are already waiting (--max-pending); retry shortly",
                {"Retry-After": "1"},
            ) from None
        finally:
            server.metrics.pending.set(server.batcher.pending)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html())

    @app.post("/v1/predict", openapi_extra=UPLOAD_SCHEMA, summary="Top-k classes of one uploaded image")
    async def predict(request: Request, top_k: int = Query(settings.top_k, ge=1, le=1000)) -> Any:
        async def handle(ticket: Ticket) -> Response:
            started = time.perf_counter()
            pixels, batched = await server.classify(request, ticket)
            return JSONResponse(server.answer(pixels, batched, top_k, started))

        return await guarded(handle)

    @app.post(
        "/v1/explain",
        openapi_extra=UPLOAD_SCHEMA,
        summary="Top-k classes and the attention-rollout map (paper Fig. 6) of one uploaded image",
        description="format=json: the predictions, the rollout grid as an array and the overlay as a PNG data "
        "URL; format=png: the overlay PNG alone. 422 for a model without attention.",
    )
    async def explain(
        request: Request,
        top_k: int = Query(settings.top_k, ge=1, le=1000),
        format: str = Query("json", pattern="^(json|png)$"),
    ) -> Any:
        if not engine.explains:
            raise ServeError(422, "no_attention", engine.why_no_explanation())

        async def handle(ticket: Ticket) -> Response:
            started = time.perf_counter()
            pixels, batched = await server.classify(request, ticket)
            rollout = await server.in_thread(server.runner, engine.rollout, pixels)
            png = await server.in_thread(server.decoder, overlay_png, pixels, rollout)
            if format == "png":
                return Response(png, media_type="image/png")
            answer = server.answer(pixels, batched, top_k, started)
            answer["rollout"] = {"grid": list(rollout.shape), "values": rollout.round(6).tolist()}
            answer["overlay_png"] = "data:image/png;base64," + base64.b64encode(png).decode()
            return JSONResponse(answer)

        return await guarded(handle)

    @app.get("/v1/model", summary="The model card: classes, resolution, preprocessing, source hash")
    async def model_card() -> dict:
        card = engine.card()
        card["serving"] = {key: value for key, value in asdict(settings).items() if key not in ("source", "device")}
        return card

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded and the batcher runs")
    async def readyz() -> Response:
        if server.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse(error_body(503, "not_ready", "not ready"), 503, headers={"Retry-After": "1"})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def metrics() -> Response:
        return Response(server.metrics.exposition(), media_type=server.metrics.content_type)

    return app


class CountRequests:
    """ASGI middleware counting every HTTP answer by endpoint and status, with its latency (a plain ASGI wrapper:
    Starlette's BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


KNOWN_PATHS = {"/", "/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs"}


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every failure answers JSON {"error": {status, kind, message}}; an unexpected one names no detail."""

    def respond(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        return JSONResponse(error_body(status, kind, message), status, headers=headers)

    @app.exception_handler(ServeError)
    async def refused(request: Request, error: ServeError) -> JSONResponse:
        return respond(error.status, error.kind, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return respond(422, "invalid_parameter", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return respond(error.status_code, "http", str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return respond(500, "internal", "internal error; the server log has the details")


def settings_from_environment() -> ServeSettings:
    """The settings a `--workers N` parent put in the environment."""
    return ServeSettings(**json.loads(os.environ[ENV_SETTINGS]))


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process of `--workers N`: load the model, build the app."""
    settings = settings_from_environment()
    engine = Engine.load(settings.source, settings.backend, settings.device, settings.threads, settings.precision)
    engine.warm_up(settings.max_batch)
    return create_app(engine, settings)


def dump_settings(settings: ServeSettings) -> str:
    """The settings as the JSON `settings_from_environment` reads."""
    return json.dumps(asdict(settings))
