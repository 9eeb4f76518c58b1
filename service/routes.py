"""HTTP routes. A forecast walks one way: receive (read, decode) → forecast → answer (outcome, encode); the
limits, offloading and timing on the way are the app state's (`service.state.AppState`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from latentcast.service import openapi
from latentcast.service.deps import Ready, State
from latentcast.service.errors import ServiceError
from latentcast.service.formats import oip
from latentcast.service.registry import ServedModel
from latentcast.service.schemas import ForecastResponse, ModelsResponse
from latentcast.service.state import AppState

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


# The Open Inference Protocol v2 (KServe, Triton, Seldon clients), beside the native API: the same
# limits, key, scheduler and answers as /forecast (service/formats/oip.py); errors as {"error": ...}.
v2 = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the OIP's error answers: `{"error": "..."}`."""
    why = {
        400: "a tensor or parameter that is not valid",
        401: "missing or wrong API key",
        404: "no such model",
        413: "over a limit (body, series, answer)",
        415: "a Content-Encoding the server does not take",
        422: "every series refused, or a bad option",
        499: "the client went away",
        503: "models still loading, or the queue is full",
        504: "the request's time ran out",
    }
    example = {"application/json": {"example": {"error": "what is wrong and what to change"}}}
    return {c: {"description": why[c], "content": example} for c in codes}


@v2.get("", summary="Server metadata (OIP v2)")
async def v2_server(request: Request) -> dict[str, Any]:
    return {"name": "latentcast", "version": request.app.version, "extensions": []}


@v2.get("/health/live", summary="Liveness (OIP v2)")
async def v2_live() -> dict[str, bool]:
    return {"live": True}


@v2.get("/health/ready", summary="Readiness (OIP v2): 503 until the models are loaded", responses=_errors(503))
async def v2_ready(state: State) -> Response:
    return _v2_json({"ready": state.ready}, 200 if state.ready else 503)


@v2.get("/models/{name}/versions/{version}", include_in_schema=False)
async def v2_model_version(name: str, version: str, state: State) -> Response:
    _v2_version(state, name, version)
    return await v2_model(name, state)


@v2.get("/models/{name}/versions/{version}/ready", include_in_schema=False)
async def v2_model_version_ready(name: str, version: str, state: State) -> Response:
    _v2_version(state, name, version)
    return await v2_model_ready(name, state)


@v2.post("/models/{name}/versions/{version}/infer", include_in_schema=False)
async def v2_infer_version(name: str, version: str, request: Request, state: State, _: Ready) -> Response:
    _v2_version(state, name, version)
    return await v2_infer(name, request, state, None)


@v2.get("/models/{name}", summary="A model's inputs and outputs (OIP v2)", responses=_errors(401, 404, 503))
async def v2_model(name: str, state: State) -> Response:
    served = _v2_served(state, name)
    b = served.bundle
    return _v2_json(oip.metadata(b.name, b.version, tuple(b.channels)))


@v2.get("/models/{name}/ready", summary="A model's readiness (OIP v2)", responses=_errors(401, 404, 503))
async def v2_model_ready(name: str, state: State) -> Response:
    if state.ready:
        _v2_served(state, name)
    return _v2_json({"name": name, "ready": state.ready}, 200 if state.ready else 503)


@v2.post(
    "/models/{name}/infer",
    summary="Forecast (OIP v2): tensors of flat series with per-series counts",
    responses=_errors(400, 401, 404, 413, 415, 422, 499, 503, 504),
)
async def v2_infer(name: str, request: Request, state: State, _: Ready) -> Response:
    if "inference-header-content-length" in request.headers:  # Triton's binary tensor extension
        raise ServiceError(
            400, "binary tensor data is not supported: send JSON tensors (tritonclient: binary_data=False)"
        )
    incoming = await state.receive(request, oip, {"model": name})
    fc = await state.forecast(incoming.job, incoming.deadline, lambda: _disconnected(request))
    return await state.answer(incoming, fc)


def _v2_served(state: AppState, name: str) -> ServedModel:
    if not state.ready:
        raise ServiceError(503, "models are still loading", headers={"Retry-After": "2"})
    if name not in state.models:
        raise ServiceError(404, f"model {name!r} is not served; served: {sorted(state.models)}")
    return state.models[name]


def _v2_version(state: AppState, name: str, version: str) -> None:
    served = _v2_served(state, name)
    if version != served.bundle.version:
        raise ServiceError(404, f"model {name!r} has version {served.bundle.version!r}, not {version[:80]!r}")


def _v2_json(body: dict[str, Any], status: int = 200) -> Response:
    headers = {"Retry-After": "2"} if status == 503 else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)
