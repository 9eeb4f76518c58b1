"""HTTP request and response shapes (pydantic); no torch here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictStr

# A time is a number (in the model's time unit) or an ISO-8601 date-time string; a series uses one kind.
Time = StrictFloat | StrictStr

EXAMPLE_REQUEST: dict[str, Any] = {
    "model": "pbcseq",
    "series": [
        {
            "id": "patient-17",
            "timestamps": ["2026-01-03T00:00:00Z", "2026-07-01T00:00:00Z"],
            "values": [
                [1.2, None, 3.4, 210.0, 55.0, 240.0, 10.1],
                [1.5, 260.0, None, None, 60.0, 230.0, 10.4],
            ],
            "query_times": ["2027-01-01T00:00:00Z", "2026-04-01T00:00:00Z"],
        }
    ],
    "quantiles": [0.1, 0.5, 0.9],
    "num_samples": 0,
}


class SeriesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=256, description="unique within the request")
    timestamps: list[Time] = Field(
        min_length=1, description="strictly increasing; all numbers (model time unit) or all ISO-8601"
    )
    values: list[list[StrictFloat | None]] = Field(
        description="one row per timestamp, one column per model channel in the model's order; null = not observed"
    )
    query_times: list[Time] = Field(
        min_length=1,
        description="any times (before, between, after the observations), same kind as timestamps",
    )


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    model: str | None = Field(None, description="model name (GET /models); the default model when omitted")
    series: list[SeriesIn] = Field(min_length=1)
    quantiles: list[StrictFloat] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9], description="levels in (0, 1), answered as given"
    )
    num_samples: int = Field(
        0, ge=0, description="also return this many sampled trajectories (decoded latent samples, no noise)"
    )


class ModelRef(BaseModel):
    name: str
    version: str


class SeriesForecastOut(BaseModel):
    id: str
    query_times: list[Time]
    mean: list[list[float]] = Field(description="(query time, channel)")
    quantiles: dict[str, list[list[float]]] = Field(description="level → (query time, channel)")
    samples: list[list[list[float]]] | None = Field(None, description="(sample, query time, channel)")


class ForecastResponse(BaseModel):
    model: ModelRef
    channels: list[str]
    forecasts: list[SeriesForecastOut]


class ModelInfo(BaseModel):
    name: str
    version: str
    channels: list[str]
    log_channels: list[str]
    time_unit: str = Field(description="unit of numeric times; date-times are converted to it")
    time_scale: float = Field(description="model time = time in unit × scale")
    max_horizon: float = Field(description="furthest a query may lie from the observations, in time units")
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    default: bool


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    series_id: str | None = None


class ErrorResponse(BaseModel):
    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)
