"""HTTP routes: validate, hand the work to the batcher, map results and failures to statuses."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from typing import Annotated, Any

import numpy as np
import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from models import Status
from models.packed import PackedForecast
from service import arrow
from service.errors import ServiceError, field_error
from service.prepare import Job, prepare
from service.registry import ServedModel
from service.schemas import (
    EXAMPLE_MODELS,
    EXAMPLE_REQUEST,
    EXAMPLE_RESPONSE,
    ErrorResponse,
    ForecastRequest,
    ForecastResponse,
    ModelsResponse,
)
from service.state import AppState

router = APIRouter()

_UNION_TAGS = {"float", "str", "int", "bool", "none"}
_SOLVER_REASONS = {
    Status.MAX_STEPS: "the solver needed more than its step limit (the horizon may be too long for this model)",
    Status.NONFINITE: "the forecast became non-finite (the dynamics blew up; check the values are in range)",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed JSON",
        401: "missing or wrong API key",
        404: "unknown model",
        413: "body, series, points or query times over a limit",
        422: "invalid field (named, with the series id) or solver failure",
        503: "not ready, or queue full (Retry-After)",
        504: "deadline passed",
    }.items()
}


async def get_state(request: Request) -> AppState:  # async: FastAPI runs sync dependencies in a threadpool
    state: AppState = request.app.state.latentcast
    return state


State = Annotated[AppState, Depends(get_state)]


async def require_api_key(request: Request, state: State) -> None:
    """With LATENTCAST_API_KEY set, X-API-Key (or Authorization: Bearer) must match, compared in constant time."""
    key = state.settings.api_key
    if key is None:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given or not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise ServiceError(
            401,
            "missing or wrong API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
        )


ApiKey = Annotated[None, Depends(require_api_key)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes (413) without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, f"body of {declared} bytes; the limit is {limit} (LATENTCAST_MAX_BODY_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, f"body over {limit} bytes (LATENTCAST_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes) -> ForecastRequest:
    """JSON bytes → ForecastRequest; 400 for malformed JSON, 422 naming field and series id otherwise."""
    try:
        return ForecastRequest.model_validate_json(body)
    except ValidationError as exc:
        errs = exc.errors(include_url=False)
        bad_json = next((e for e in errs if e["type"] == "json_invalid"), None)
        if bad_json is not None or not body.strip():
            raise ServiceError(400, f"malformed JSON: {bad_json['msg'] if bad_json else 'empty body'}") from None
        ids = _series_ids(body)
        items: dict[tuple[Any, ...], dict[str, Any]] = {}
        for e in errs:
            loc = list(e["loc"])
            union = isinstance(loc[-1], str) and loc[-1] in _UNION_TAGS and len(loc) > 1
            if union:  # one error per branch of `number | string`: report the field once
                loc = loc[:-1]
            msg = e["msg"]
            if union and loc[-2] in ("timestamps", "query_times") and "finite" not in msg:
                msg = "must be a number or an ISO-8601 date-time string"
            sid = ids.get(loc[1]) if len(loc) > 1 and loc[0] == "series" and isinstance(loc[1], int) else None
            prev = items.get(tuple(loc))
            if prev is None or "finite" in msg:  # of a union's branch errors, "finite" says the most
                items[tuple(loc)] = {"loc": loc, "msg": msg, "series_id": sid}
        first = next(iter(items.values()))
        err = field_error(422, first["msg"], first["loc"], first["series_id"])
        err.errors = list(items.values())
        raise err from None


def _series_ids(body: bytes) -> dict[int, str]:
    """Ids by series index, for error messages (the stdlib parser also reads NaN and Infinity)."""
    try:
        doc = json.loads(body)
        return {i: str(s["id"]) for i, s in enumerate(doc["series"]) if isinstance(s, dict) and "id" in s}
    except (ValueError, KeyError, TypeError):
        return {}


def check_solved(fc: PackedForecast) -> None:
    """422 naming every series the solver could not answer (the rest of the request is not sent)."""
    bad = np.flatnonzero(fc.status != Status.OK)
    if not bad.size:
        return
    failed = [
        {"loc": ["series", int(i)], "msg": _SOLVER_REASONS[Status(int(fc.status[i]))], "series_id": fc.ids[i]}
        for i in bad
    ]
    ids = ", ".join(repr(f["series_id"]) for f in failed[:5]) + (" …" if len(failed) > 5 else "")
    raise ServiceError(422, f"no forecast for series {ids}: {failed[0]['msg']}", failed)


def _echo_lists(job: Job) -> list[Any]:
    if isinstance(job.echo, pa.Array):  # an Arrow request answered in JSON
        q = job.packed.query_offsets.tolist()
        return [job.echo.slice(a, z - a).to_pylist() for a, z in itertools.pairwise(q)]
    return list(job.echo)


def _echo_array(job: Job) -> pa.Array:
    if isinstance(job.echo, pa.Array):
        return job.echo
    flat = list(itertools.chain.from_iterable(job.echo))  # a JSON request answered in Arrow
    try:
        return pa.array(flat)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers in some series, date-times in others
        return pa.array([str(v) for v in flat], pa.string())


def render(served: ServedModel, job: Job, fc: PackedForecast) -> bytes:
    """Forecasts → the JSON response body (orjson writes the numpy slices directly)."""
    cols = [fc.levels.index(lv) for lv in job.levels]
    keys = [repr(lv) for lv in job.levels]
    q = fc.query_offsets.tolist()
    forecasts = []
    for sid, echo, a, z in zip(fc.ids, _echo_lists(job), q[:-1], q[1:], strict=True):
        out: dict[str, Any] = {
            "id": sid,
            "query_times": echo,
            "mean": fc.mean[a:z],
            "quantiles": {k: fc.quantiles[c, a:z] for k, c in zip(keys, cols, strict=True)},
        }
        if job.num_samples and fc.samples is not None:
            out["samples"] = np.ascontiguousarray(fc.samples[: job.num_samples, a:z])
        forecasts.append(out)
    b = served.bundle
    payload = {
        "model": {"name": b.name, "version": b.version},
        "channels": list(b.channels),
        "forecasts": forecasts,
    }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def wants_arrow(request: Request, arrow_body: bool) -> bool:
    """Arrow back when Accept names it, or when the body was Arrow and Accept does not ask for JSON."""
    accept = request.headers.get("accept", "").lower()
    return arrow.MEDIA_TYPE in accept or (arrow_body and "application/json" not in accept)


_ARROW_IN = (
    "Arrow IPC stream, one row per series: id (string), timestamps (list of numbers or timestamps), values "
    "(list of rows, each a list of the model's channels; null or NaN = not observed), query_times (list, same "
    "kind as timestamps). Options in the query string."
)
_ARROW_OUT = (
    "Arrow IPC stream (for Arrow requests, or Accept: application/vnd.apache.arrow.stream): one row per series "
    "× query time × channel with columns id, time, channel, mean, q<level>…, samples (when asked)"
)
_ARROW_PARAMS = {
    "model": "Arrow bodies only: model name (default model when omitted)",
    "quantiles": "Arrow bodies only: comma-separated levels in (0, 1), default 0.1,0.5,0.9",
    "num_samples": "Arrow bodies only: sampled trajectories to return (default 0)",
}


@router.post(
    "/forecast",
    response_model=ForecastResponse,
    responses={
        200: {
            "content": {
                "application/json": {"example": EXAMPLE_RESPONSE},
                arrow.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary", "description": _ARROW_OUT}},
            }
        },
        **ERRORS,
    },
    summary="Forecast irregular series at any query times",
    openapi_extra={
        "parameters": [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
            for n, d in _ARROW_PARAMS.items()
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ForecastRequest"},
                    "example": EXAMPLE_REQUEST,
                },
                arrow.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary", "description": _ARROW_IN}},
            },
        },
    },
)
async def forecast(request: Request, state: State, _: ApiKey) -> Response:
    """Each series: observations at its own timestamps (null = channel not observed), forecasts at its own
    query times, answered in the order given, with the mean and the requested quantiles per channel."""
    if not state.ready or state.batcher is None:
        raise ServiceError(
            503,
            "models are still loading; retry shortly (GET /readyz says when ready)",
            headers={"Retry-After": "2"},
        )
    settings = state.settings
    t_start = time.perf_counter()
    body = await read_body(request, settings.max_body_bytes)
    arrow_body = request.headers.get("content-type", "").split(";")[0].strip().lower() == arrow.MEDIA_TYPE
    table = req = None
    if arrow_body:
        name, levels, num_samples = arrow.options(request.query_params)
        table = arrow.read_table(body)
    else:
        if request.query_params:
            raise field_error(
                422,
                "query parameters go with Arrow bodies; in JSON, put model, quantiles and num_samples in the body",
                ["query", next(iter(request.query_params))],
            )
        req = parse_request(body)
        name = req.model
    name = name or state.default
    served = state.models.get(name)
    if served is None:
        raise ServiceError(
            404,
            f"unknown model {name!r}; served: {sorted(state.models)} (GET /models)",
            [{"loc": ["model"], "msg": "unknown model", "series_id": None}],
        )
    if table is not None:
        job = arrow.prepare_arrow(table, levels, num_samples, served.limits, settings)
    else:
        assert req is not None
        job = prepare(req, served.limits, settings)
    request.scope.setdefault("state", {})["series"] = job.size
    state.metrics.series_per_request.observe(job.size)
    state.metrics.inflight.inc()
    t_prepared = time.perf_counter()
    try:
        fc = await state.batcher.submit(job, settings.request_timeout_s)
    finally:
        state.metrics.inflight.dec()
    t_solved = time.perf_counter()
    state.metrics.queue_seconds.observe(job.timing.get("queue", 0.0))
    check_solved(fc)
    if wants_arrow(request, arrow_body):
        b = served.bundle
        content = arrow.render_arrow(b.name, b.version, list(b.channels), job, _echo_array(job), fc)
        media = arrow.MEDIA_TYPE
    else:
        content, media = render(served, job, fc), "application/json"
    timing = server_timing(job, t_prepared - t_start, t_solved - t_prepared, time.perf_counter() - t_solved)
    return Response(content, media_type=media, headers={"Server-Timing": timing})


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


@router.get(
    "/models",
    response_model=ModelsResponse,
    responses={200: {"content": {"application/json": {"example": EXAMPLE_MODELS}}}, 401: ERRORS[401], 503: ERRORS[503]},
)
async def list_models(state: State, _: ApiKey) -> ModelsResponse:
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


@router.get(
    "/readyz",
    summary="Readiness: models loaded and warmed up",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready", "models": ["pbcseq", "spirals"]}}}},
        503: {
            "description": "loading, or loading failed",
            "content": {"application/json": {"example": {"status": "loading"}}},
        },
    },
)
async def readyz(state: State) -> Response:
    if state.ready:
        body = {"status": "ready", "models": sorted(state.models)}
        return Response(orjson.dumps(body), media_type="application/json")
    body = {"status": "failed", "detail": state.failure} if state.failure else {"status": "loading"}
    return Response(orjson.dumps(body), status_code=503, media_type="application/json", headers={"Retry-After": "2"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": 'latentcast_requests_total{path="/forecast",status="200"} 42.0\n'
                    "latentcast_queue_series 0.0\n"
                }
            }
        }
    },
)
async def metrics(state: State) -> Response:
    state.metrics.queue_series.set(state.batcher.queued_series if state.batcher else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
