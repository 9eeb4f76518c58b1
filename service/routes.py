"""HTTP routes. A forecast walks one way: receive (read, decode) → forecast → answer (outcome, encode); the
limits, offloading and timing on the way are the app state's (`service.state.AppState`)."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from latentcast.service import openapi
from latentcast.service.deps import Ready, State
from latentcast.service.errors import ServiceError
from latentcast.service.schemas import ForecastResponse, ModelsResponse

router = APIRouter()


@router.post("/forecast", response_model=ForecastResponse, **openapi.FORECAST)
async def forecast(request: Request, state: State, _: Ready) -> Response:
    """Each series: observations at its own timestamps (null = channel not observed), forecasts at its own
    query times, answered in the order given, with the mean and the requested quantiles per channel."""
    incoming = await state.receive(request)
    fc = await state.forecast(incoming.job, incoming.deadline, lambda: _disconnected(request))
    return await state.answer(incoming, fc)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read: the next ASGI message says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0)  # never spin the loop, whatever a server sends


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
