"""The FastAPI app: `create_app(settings)`; models load in the background after start-up so that
/healthz answers at once and /readyz turns 200 only once every model is loaded and warmed up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentcast.service.auth import RequireKey
from latentcast.service.batching import Batcher, BatchStats, Done
from latentcast.service.config import Settings, get_settings
from latentcast.service.decoding import DecodePool
from latentcast.service.errors import ServiceError
from latentcast.service.metrics import Metrics
from latentcast.service.registry import choose_device, default_model_name, load_and_warm, measure
from latentcast.service.routes import router, v2
from latentcast.service.runtime import on_own_thread, tune_gc
from latentcast.service.schemas import ForecastRequest
from latentcast.service.state import AppState

log = logging.getLogger("latentcast.service")
access = logging.getLogger("latentcast.access")
KNOWN_PATHS = {"/forecast", "/models", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}


async def _load(state: AppState, on_fatal: Callable[[str], None] | None) -> None:
    s = state.settings
    warming = None
    try:
        if s.decode_processes:  # its processes start while the models load
            state.decoder = DecodePool(s.decode_processes)
            warming = asyncio.create_task(asyncio.to_thread(state.decoder.warm))
        device = choose_device(s.device)
        models = await on_own_thread(load_and_warm, s, device)
        if warming is not None:  # the decode processes' start-up would slow the timings below
            await warming
        costs = await on_own_thread(measure, models, s.num_samples)
        tune_gc()
        state.metrics.watch_gc(True)
        state.default = default_model_name(s, models)
        m = state.metrics

        def on_batch(b: BatchStats) -> None:
            m.batch_series.observe(b.series)
            m.batch_requests.observe(b.requests)
            m.batch_seconds.observe(b.seconds)
            m.nfe.labels(b.model).inc(b.nfe)
            m.graph_captures.inc(b.captures)
            if b.stopped:
                m.slices_stopped.labels(b.model).inc()

        def on_done(d: Done) -> None:
            m.requests_done.labels(d.model, d.outcome).inc()
            if d.outcome in ("refused", "busy"):
                m.cost_refused.labels(d.model).inc(d.estimated_seconds)
                return
            m.cost_admitted.labels(d.model).inc(d.estimated_seconds)
            m.solve_seconds.observe(d.solve_seconds)

        state.batcher = Batcher(
            models,
            enabled=s.batching,
            max_batch_series=s.max_batch_series,
            max_wait_ms=s.max_wait_ms,
            max_queue_series=s.max_queue_series,
            max_queue_points=s.max_queue_points,
            num_samples=s.num_samples,
            on_batch=on_batch,
            on_queue=m.queue_series.set,
            on_done=on_done,
            slice_seconds=s.slice_seconds,
            max_request_seconds=s.max_request_seconds,
            costs=costs,
            express_seconds=s.express_seconds,
        )
        state.batcher.start()
        state.models = models
        state.ready = True
        m.ready.set(1)
        log.info("ready: models %s on %s (default %s)", sorted(models), device, state.default)
    except Exception as exc:
        state.failure = f"{type(exc).__name__}: {exc}"
        log.error("model loading failed: %s", state.failure)
        log.debug("model loading failed", exc_info=True)
        if on_fatal is not None:
            on_fatal(f"could not load the models: {state.failure}")


def create_app(settings: Settings | None = None, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The app. `on_fatal(reason)` is called if the models cannot be loaded (the server then exits;
    without it the app stays up and /readyz reports the failure)."""
    settings = settings or get_settings()
    state = AppState(settings=settings, metrics=Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(state, on_fatal))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if state.batcher is not None:
            await asyncio.to_thread(state.batcher.stop)
        if state.decoder is not None:
            await asyncio.to_thread(state.decoder.close)
        state.metrics.watch_gc(False)

    app = FastAPI(
        title="latentcast",
        summary="Forecasts for irregularly sampled, partly missing time series (latent ODEs).",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.latentcast = state
    app.include_router(router)
    app.include_router(v2)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if request.url.path.startswith("/v2"):  # the Open Inference Protocol's error shape: one string
            return JSONResponse({"error": exc.oip(settings.max_errors)}, status_code=exc.status, headers=exc.headers)
        return JSONResponse(exc.body(settings.max_errors), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own 404 and 405, in the same body shape as every other error."""
        if request.url.path.startswith("/v2"):
            return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"detail": exc.detail, "errors": []}, status_code=exc.status_code, headers=exc.headers)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            req = ForecastRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps.update(req.pop("$defs", {}))
            comps["ForecastRequest"] = req
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(HeadAsGet)
    if settings.api_key is not None:
        private = {"/forecast", "/models"} | ({"/metrics"} if not settings.open_metrics else set())
        private |= DOCS if not settings.open_docs else set()
        key = settings.api_key.get_secret_value()
        app.add_middleware(RequireKey, paths=private, key=key, prefixes=("/v2/models/",))
    app.add_middleware(AccessLog, metrics=state.metrics)
    return app


DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class HeadAsGet:
    """HEAD is answered wherever GET is (RFC 9110 §9.3.2): the GET's status and headers, no body."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def head_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, head_only)


class AccessLog:
    """One JSON log line and the Prometheus counters per request; adds X-Request-ID to every response."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"")
        rid = given.decode("ascii") if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]  # ours if unusable
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # not a bug: the client went away mid-request
            status = 499
            access.info("request %s: the client disconnected", rid)
        except Exception:  # a bug: one line to the client, the traceback to the log, the connection closed
            log.exception("unhandled error in request %s", rid)
            if not started:
                msg = f"internal error (request id {rid}); this is a bug"
                body = {"error": msg} if scope["path"].startswith("/v2") else {"detail": msg, "errors": []}
                await JSONResponse(body, 500, headers={"Connection": "close"})(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            if path == "other" and scope["path"].startswith("/v2/models/") and scope["path"].endswith("/infer"):
                path = "/v2/models/{name}/infer"  # one label for every model: the metric's cardinality stays bounded
            self.metrics.requests.labels(path, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(seconds)
            if path not in ("/metrics", "/healthz", "/readyz") or status >= 400:
                access.info(
                    orjson.dumps(
                        {
                            "request_id": rid,
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status,
                            "series": scope["state"].get("series", 0),
                            "latency_ms": round(seconds * 1e3, 3),
                        }
                    ).decode()
                )
