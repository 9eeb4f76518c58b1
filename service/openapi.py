"""What /docs shows beyond the schemas: error statuses, and the Arrow body of POST /forecast."""

from __future__ import annotations

from typing import Any

from latentcast.arrowio import MEDIA_TYPE as ARROW
from latentcast.service.schemas import EXAMPLE_MODELS, EXAMPLE_REQUEST, EXAMPLE_RESPONSE, ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed JSON or Arrow stream, a key or parameter given twice, an ambiguous API key",
        401: "missing or wrong API key",
        404: "unknown model",
        406: "Accept allows neither JSON nor Arrow",
        413: "body, series, points or query times over a limit",
        415: "Content-Type is neither JSON nor Arrow, or Content-Encoding neither gzip nor deflate",
        422: "invalid field or refused series (each named, with its id), or solver failure",
        503: "not ready, or queue full (Retry-After)",
        504: "deadline passed",
    }.items()
}

_ARROW_IN = (
    "Arrow IPC stream, one row per series: id (string), timestamps (list of numbers or timestamps), values "
    "(list of rows, each a list of the model's channels; null or NaN = not observed), query_times (list, same "
    "kind as timestamps). Options in the query string or the schema metadata (the same names)."
)
_ARROW_OUT = (
    "Arrow IPC stream (for Arrow requests, or Accept: application/vnd.apache.arrow.stream): one row per series "
    "× query time × channel with columns id, time, channel, mean, q<level>…, samples (when asked), nfe; "
    "the schema metadata names the model, its version and the solver settings used, and holds the warnings "
    "(latentcast.warnings) and refused series (latentcast.errors) as JSON lists"
)
_ARROW_PARAMS = {
    "model": "Arrow bodies only: model name (default model when omitted)",
    "quantiles": "Arrow bodies only: comma-separated levels in (0, 1), default 0.1,0.5,0.9",
    "num_samples": "Arrow bodies only: sampled trajectories to return (default 0)",
    "solver": "Arrow bodies only: accuracy level fast, default or precise",
    "rtol": "Arrow bodies only: the solver's relative tolerance (within the server's bounds)",
    "atol": "Arrow bodies only: the solver's absolute tolerance (within the server's bounds)",
    "on_error": "Arrow bodies only: raise (default: a refused series fails the request) or skip (answer the others)",
}

FORECAST: dict[str, Any] = {
    "responses": {
        200: {
            "content": {
                "application/json": {"example": EXAMPLE_RESPONSE},
                ARROW: {"schema": {"type": "string", "format": "binary", "description": _ARROW_OUT}},
            }
        },
        **ERRORS,
    },
    "summary": "Forecast irregular series at any query times",
    "openapi_extra": {
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
                ARROW: {"schema": {"type": "string", "format": "binary", "description": _ARROW_IN}},
            },
        },
    },
}

MODELS: dict[str, Any] = {
    "responses": {
        200: {"content": {"application/json": {"example": EXAMPLE_MODELS}}},
        401: ERRORS[401],
        503: ERRORS[503],
    }
}

READYZ: dict[str, Any] = {
    "summary": "Readiness: models loaded and warmed up",
    "responses": {
        200: {
            "content": {
                "application/json": {"example": {"status": "ready", "models": ["pbcseq", "physionet2012", "spirals"]}}
            }
        },
        503: {
            "description": "loading, or loading failed",
            "content": {"application/json": {"example": {"status": "loading"}}},
        },
    },
}

METRICS: dict[str, Any] = {
    "summary": "Prometheus metrics",
    "responses": {
        200: {
            "content": {
                "text/plain": {
                    "example": 'latentcast_requests_total{path="/forecast",status="200"} 42.0\n'
                    "latentcast_queue_series 0.0\n"
                }
            }
        }
    },
}
