"""HTTP request and response shapes (pydantic); no torch here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

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
    "on_error": "raise",
}


EXAMPLE_RESPONSE: dict[str, Any] = {
    "model": {"name": "pbcseq", "version": "d4024a0afd83"},
    "channels": ["bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"],
    "solver": {"method": "dopri5", "rtol": 0.001, "atol": 0.0001, "max_num_steps": 2000},
    "forecasts": [
        {
            "id": "patient-17",
            "nfe": 62.0,
            "query_times": ["2027-01-01T00:00:00Z", "2026-04-01T00:00:00Z"],
            "point": [[1.16, 244.7, 3.35, 596.7, 63.1, 232.7, 10.62], [1.11, 249.1, 3.43, 590.1, 64.4, 235.8, 10.44]],
            "mean": [[1.48, 252.8, 3.35, 656.6, 67.2, 232.7, 10.65], [1.38, 257.5, 3.43, 647.9, 68.5, 235.8, 10.47]],
            "quantiles": {
                "0.1": [[0.49, 179.3, 2.94, 349.3, 40.5, 158.0, 9.69], [0.49, 182.5, 3.03, 348.8, 41.8, 160.8, 9.55]],
                "0.5": [[1.16, 244.7, 3.35, 596.7, 63.1, 232.8, 10.62], [1.11, 249.1, 3.43, 590.1, 64.4, 236.1, 10.44]],
                "0.9": [
                    [2.82, 337.4, 3.76, 1037.5, 99.2, 307.3, 11.65],
                    [2.58, 343.8, 3.82, 1016.6, 100.3, 310.6, 11.43],
                ],
            },
            "warnings": [],
        }
    ],
    "errors": [],
}

EXAMPLE_MODELS: dict[str, Any] = {
    "models": [
        {
            "name": "pbcseq",
            "version": "d4024a0afd83",
            "channels": ["bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"],
            "log_channels": ["bili", "chol", "alk.phos", "ast", "protime"],
            "time_unit": "day",
            "time_scale": 0.0027378507871321013,
            "max_horizon": 10303.2,
            "training_data": {
                "name": "pbcseq",
                "series": 312,
                "visits": 1945,
                "split": {"train": 188, "val": 62, "test": 62},
            },
            "metrics": {
                "evaluation": {
                    "task": "pbcseq last visit",
                    "nmse": 0.494,
                    "coverage80": 0.845,
                    "locf_nmse": 0.614,
                    "linear_trend_nmse": 1.267,
                }
            },
            "default": True,
        }
    ]
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
    event_times: list[Time] = Field(
        default_factory=list,
        description="for a model with events (GET /models: `events`): when each happened or will happen, past or "
        "future (the plan a forecast is asked under), same kind as timestamps, any order",
    )
    event_values: list[list[StrictFloat | None]] = Field(
        default_factory=list,
        description="one row per event time, one value per event kind in the model's order; null = none of that kind"
        " (a level kind, GET /models `inputs`: unchanged; its value holds until the next)",
    )
    static: list[StrictFloat | None] | None = Field(
        None,
        description="for a model with static covariates (GET /models: `static`): one value each, in the model's "
        "order; null (or the field omitted): unknown, the training mean is used, with a warning",
    )


class SolverRequest(BaseModel):
    """Accuracy on demand: a named level, and/or tolerances (which win over the level's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    level: Literal["fast", "default", "precise"] | None = Field(
        None, description="fast: rtol 1e-2, atol 1e-3; default: the model's own; precise: rtol 1e-6, atol 1e-8"
    )
    rtol: StrictFloat | None = Field(None, gt=0, lt=1, description="relative tolerance (within the server's bounds)")
    atol: StrictFloat | None = Field(None, gt=0, lt=1, description="absolute tolerance (within the server's bounds)")


class ForecastOptions(BaseModel):
    """Every field of a request but its series (validated apart, so one bad series fails alone)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: StrictStr | None = Field(None, description="model name (GET /models); the default model when omitted")
    quantiles: list[StrictFloat] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9], description="levels in (0, 1), answered as given"
    )
    num_samples: StrictInt = Field(
        0, ge=0, description="also return this many sampled trajectories (decoded latent samples, no noise)"
    )
    solver: SolverRequest | None = Field(None, description="the solver's accuracy for this request")
    on_error: Literal["raise", "skip"] = Field(
        "raise",
        description="raise: any refused series fails the request (422 listing every one); skip: the other "
        "series are answered and each refused one is listed in `errors`",
    )


class ForecastRequest(ForecastOptions):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    series: list[SeriesIn] = Field(min_length=1)


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    series_id: str | None = None


class ModelRef(BaseModel):
    name: str
    version: str


class SolverUsed(BaseModel):
    method: str
    rtol: float
    atol: float
    max_num_steps: int


class Note(BaseModel):
    loc: list[str | int]
    msg: str
    series_id: str | None = None
    kind: str = Field(
        description="out_of_bounds, unusual_value (a value or an input far from the training data), "
        "unusual_forecast or missing_inputs (a static covariate not given: the training mean is used)"
    )


class SeriesForecastOut(BaseModel):
    id: str
    nfe: float = Field(description="vector-field evaluations one trajectory of this series took (mean over samples)")
    query_times: list[Time]
    point: list[list[float]] = Field(
        description="(query time, channel) the point forecast: the predictive median on channels the model "
        "logs (GET /models says which), the mean on the others"
    )
    mean: list[list[float]] = Field(description="(query time, channel) the predictive mean")
    quantiles: dict[str, list[list[float]]] = Field(description="level → (query time, channel)")
    samples: list[list[list[float]]] | None = Field(None, description="(sample, query time, channel)")
    warnings: list[Note] = Field(
        default_factory=list, description="what is unusual about this series or its answer (answered all the same)"
    )


class ForecastResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_RESPONSE]})

    model: ModelRef
    channels: list[str]
    solver: SolverUsed
    forecasts: list[SeriesForecastOut]
    errors: list[ErrorItem] = Field(
        default_factory=list, description="with on_error=skip: each refused series and why (not in forecasts)"
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    channels: list[str]
    log_channels: list[str]
    time_unit: str = Field(description="unit of numeric times; date-times are converted to it")
    time_scale: float = Field(description="model time = time in unit × scale")
    events: list[str] = Field(
        default_factory=list, description="event kinds the model takes (a series' event_values columns, in order)"
    )
    static: list[str] = Field(
        default_factory=list, description="static covariates the model takes (a series' static values, in order)"
    )
    inputs: dict[str, Any] | None = Field(
        None,
        description="the inputs' training scales: each event kind's kind (\"event\": an amount at its time; "
        '"level": a value held until the next, as an infusion rate) and typical value, each covariate\'s mean and std',
    )
    max_horizon: float = Field(description="furthest a query may lie from the observations, in time units")
    bounds: dict[str, list[float | None]] = Field(
        default_factory=dict,
        description="channel → [lower, upper] a measurement can take (null: none); values outside are set aside "
        "with a warning, answers clipped to them",
    )
    missing_values: dict[str, list[float]] = Field(
        default_factory=dict, description="channel → values that mean 'not observed' (e.g. -1)"
    )
    bounds_source: str = Field("", description="where the bounds come from")
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    default: bool


class ModelsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_MODELS]})

    models: list[ModelInfo]


class ErrorResponse(BaseModel):
    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)
    errors_total: int | None = Field(None, description="how many errors there were, when the list is cut short")
