"""HTTP routes. A forecast walks one way: decode (by its format) → submit → outcome → encode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from latentcast.models import PackedForecast
from latentcast.service import formats, openapi
from latentcast.service.decoding import content_encoding
from latentcast.service.deps import Ready, State, read_body
from latentcast.service.errors import ServiceError
from latentcast.service.outcome import outcome
from latentcast.service.schemas import ForecastResponse, ModelsResponse
from latentcast.service.validate import Job

router = APIRouter()


@router.post("/forecast", response_model=ForecastResponse, **openapi.FORECAST)
async def forecast(request: Request, state: State, _: Ready) -> Response:
    """Each series: observations at its own timestamps (null = channel not observed), forecasts at its own
    query times, answered in the order given, with the mean and the requested quantiles per channel."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + state.settings.request_timeout_s
    types = request.headers.getlist("content-type")
    if len(types) > 1:
        raise ServiceError(400, "Content-Type is given more than once; give it once")
    body_format = formats.of_body(types[0] if types else None)
    answer_format = formats.of_answer(", ".join(request.headers.getlist("accept")) or None, body_format)
    coding = content_encoding(", ".join(request.headers.getlist("content-encoding")) or None)
    params = _params(request)
    settings = state.settings
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    job = await state.decode(body_format, coding, body, params)
    request.scope.setdefault("state", {})["series"] = job.n_series
    size = answer_format.answer_bytes(job)
    if size > settings.max_response_bytes:
        raise ServiceError(
            413,
            f"the answer could take {size} bytes; the limit is {settings.max_response_bytes} "
            "(LATENTCAST_MAX_RESPONSE_BYTES): split the request or ask for fewer query times, quantiles or samples",
        )
    t1 = time.perf_counter()
    if job.size:
        fc = await state.forecast(job, deadline, lambda: _disconnected(request))
    else:  # every series refused (on_error=skip): nothing to solve
        fc = PackedForecast.empty(job.model.n_channels, job.levels, job.num_samples)
    t2 = time.perf_counter()
    out = outcome(job, fc, settings.unusual_output_scales)
    state.metrics.count_outcome(job.model.name, out)
    content = await state.offload(size > settings.offload_bytes, answer_format.encode, job, out)
    timing = server_timing(job, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return Response(content, media_type=answer_format.MEDIA_TYPE, headers={"Server-Timing": timing})


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read: the next ASGI message says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0)  # never spin the loop, whatever a server sends


def _params(request: Request) -> Mapping[str, str]:
    """The query parameters; 400 when one is given twice (which copy counts must not be a guess)."""
    items = request.query_params.multi_items()
    names = [k for k, _ in items]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise ServiceError(400, f"query parameter {twice[0]!r} is given more than once; give it once")
    return dict(items)


def server_timing(job: Job, read_s: float, wait_s: float, render_s: float) -> str:
    """Where this request's time went (Server-Timing, ms): read + validate, queued for the inference
    thread, the solve of its batch, the hand-back to the event loop, render; and its batch's size and
    CUDA graph captures. Load tests read it to explain slow requests."""
    t = job.timing
    queue, solve = t.get("queue", 0.0), t.get("solve", 0.0)
    handback = max(0.0, wait_s - queue - solve)
    parts = [("read", read_s), ("queue", queue), ("solve", solve), ("handback", handback), ("render", render_s)]
    out = ", ".join(f"{k};dur={v * 1e3:.2f}" for k, v in parts)
    return f'{out}, batch;desc="{int(t.get("batch_series", 0))}", captures;desc="{int(t.get("captures", 0))}"'


@router.get("/models", response_model=ModelsResponse, **openapi.MODELS)
async def list_models(state: State) -> ModelsResponse:
    """Every served model: name, version (a digest of its weights), channels in order, time unit, training
    data and evaluation metrics."""
    if not state.ready:
        raise ServiceError(503, "models are still loading", headers={"Retry-After": "2"})
    return ModelsResponse(models=[m.info(default=n == state.default) for n, m in state.models.items()])


@router.get(
    "/healthz",
    summary="Liveness: the process answers",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", **openapi.READYZ)
async def readyz(state: State) -> Response:
    if state.ready:
        body = {"status": "ready", "models": sorted(state.models)}
        return Response(orjson.dumps(body), media_type="application/json")
    body = {"status": "failed", "detail": state.failure} if state.failure else {"status": "loading"}
    return Response(orjson.dumps(body), status_code=503, media_type="application/json", headers={"Retry-After": "2"})


@router.get("/metrics", response_class=Response, **openapi.METRICS)
async def metrics(state: State) -> Response:
    state.metrics.queue_series.set(state.batcher.queued_series if state.batcher else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
