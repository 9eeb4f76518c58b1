"""Validate a parsed forecast request against a model and turn it into model-time arrays.

Everything the schema cannot say is checked here, each failure a `ServiceError` naming the series id
and field: time kinds and parsing, strict ordering, row shapes, empty series, horizons, limits.
Times of a series are measured from its first observation (the dynamics are time-invariant).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models import Series, TimeSpec
from models.data import TIME_UNITS
from service.config import Settings
from service.errors import ServiceError, field_error
from service.schemas import ForecastRequest, SeriesIn


@dataclasses.dataclass(frozen=True)
class ModelLimits:
    """What `prepare` needs to know about a model."""

    name: str
    n_channels: int
    time: TimeSpec
    max_horizon: float  # model time


@dataclasses.dataclass
class Job:
    """One request's work in model terms. series[i].times and queries[i] share series i's origin."""

    model: str
    series: list[Series]
    queries: list[np.ndarray]
    echo: list[list[float | str]]
    levels: tuple[float, ...]
    num_samples: int

    @property
    def size(self) -> int:
        return len(self.series)


def _kind(values: Sequence[float | str]) -> str | None:
    """ "number", "datetime", or None when mixed."""
    types = set(map(type, values))  # one C-level pass; pydantic gave floats, ints or strs
    if str not in types:
        return "number"
    return "datetime" if len(types) == 1 else None


def _to_unit(values: Sequence[float | str], kind: str, spec: TimeSpec, sid: str, field: str, i: int) -> np.ndarray:
    """Times → float64 in the model's time unit (absolute; the caller subtracts an origin)."""
    if kind == "number":
        return np.asarray(values, dtype=np.float64)
    if spec.unit == "unitless":
        raise field_error(422, "this model takes numeric times, not date-times", ["series", i, field], sid)
    try:
        stamps = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        for j, v in enumerate(values):
            try:
                pd.to_datetime(v, utc=True, format="ISO8601")
            except (ValueError, TypeError, OverflowError):
                raise field_error(422, f"{v!r} is not an ISO-8601 date-time", ["series", i, field, j], sid) from None
        raise field_error(422, "unparsable date-times", ["series", i, field], sid) from None
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns.astype(np.float64) / 1e9 / TIME_UNITS[spec.unit]


def _series(s: SeriesIn, i: int, model: ModelLimits, settings: Settings) -> tuple[Series, np.ndarray]:
    sid = s.id
    n, q = len(s.timestamps), len(s.query_times)
    if n > settings.max_points:
        raise field_error(
            413,
            f"{n} observations; the limit is {settings.max_points} (LATENTCAST_MAX_POINTS)",
            ["series", i, "timestamps"],
            sid,
        )
    if q > settings.max_query_times:
        raise field_error(
            413,
            f"{q} query times; the limit is {settings.max_query_times} (LATENTCAST_MAX_QUERY_TIMES)",
            ["series", i, "query_times"],
            sid,
        )
    kind = _kind(s.timestamps)
    if kind is None:
        raise field_error(422, "mixes numbers and date-time strings; use one kind", ["series", i, "timestamps"], sid)
    qkind = _kind(s.query_times)
    if qkind != kind:
        raise field_error(422, f"must be of the same kind as timestamps ({kind}s)", ["series", i, "query_times"], sid)
    ts = _to_unit(s.timestamps, kind, model.time, sid, "timestamps", i)
    tq = _to_unit(s.query_times, kind, model.time, sid, "query_times", i)
    bad = np.flatnonzero(np.diff(ts) <= 0)
    if bad.size:
        j = int(bad[0]) + 1
        raise field_error(
            422,
            f"must be strictly increasing: [{j}] = {s.timestamps[j]!r} does not come after "
            f"[{j - 1}] = {s.timestamps[j - 1]!r}",
            ["series", i, "timestamps", j],
            sid,
        )
    if len(s.values) != n:
        raise field_error(422, f"has {len(s.values)} rows for {n} timestamps", ["series", i, "values"], sid)
    widths = {len(row) for row in s.values}
    if widths != {model.n_channels}:
        j = next(k for k, row in enumerate(s.values) if len(row) != model.n_channels)
        raise field_error(
            422,
            f"row has {len(s.values[j])} values; model {model.name!r} has {model.n_channels} "
            "channels (GET /models lists them)",
            ["series", i, "values", j],
            sid,
        )
    flat = itertools.chain.from_iterable(s.values)  # rows checked equal width above; None → NaN
    values = np.fromiter(flat, dtype=np.float64, count=n * model.n_channels).reshape(n, model.n_channels)
    observed = ~np.isnan(values).all(axis=1)
    if not observed.any():
        raise field_error(422, "no observed value at all; a series needs at least one", ["series", i, "values"], sid)
    origin = ts[0]
    times = (ts - origin) * model.time.scale
    queries = (tq - origin) * model.time.scale
    lo, hi = times[observed][0], times[observed][-1]
    dist = np.maximum(np.maximum(lo - queries, queries - hi), 0.0)
    far = np.flatnonzero(dist > model.max_horizon)
    if far.size:
        j = int(far[0])
        unit = f"{model.time.unit}s" if model.time.unit != "unitless" else "time units"
        raise field_error(
            422,
            f"{s.query_times[j]!r} lies {dist[j] / model.time.scale:.4g} {unit} from the observations; the "
            f"limit is {model.max_horizon / model.time.scale:.4g} (LATENTCAST_MAX_HORIZON_FACTOR)",
            ["series", i, "query_times", j],
            sid,
        )
    series = Series(id=sid, times=times[observed], values=values[observed].astype(np.float32))
    return series, queries


def _all_series_at_once(
    items: Sequence[SeriesIn], model: ModelLimits, settings: Settings
) -> tuple[list[Series], list[np.ndarray]] | None:
    """`_series` for every series in a few array operations over the concatenated request (a bulk
    request's validation was ~70 µs of Python per series). None when any check fails, or time kinds
    differ between series: the caller then goes series by series and raises the precise error.
    Same results as `_series` (tests/service/test_prepare.py checks it)."""
    d = model.n_channels
    n_obs = np.fromiter(map(len, (s.timestamps for s in items)), dtype=np.int64, count=len(items))
    n_q = np.fromiter(map(len, (s.query_times for s in items)), dtype=np.int64, count=len(items))
    n_rows = np.fromiter(map(len, (s.values for s in items)), dtype=np.int64, count=len(items))
    if n_obs.max() > settings.max_points or n_q.max() > settings.max_query_times or (n_rows != n_obs).any():
        return None
    flat_t = list(itertools.chain.from_iterable(s.timestamps for s in items))
    flat_q = list(itertools.chain.from_iterable(s.query_times for s in items))
    kinds = set(map(type, flat_t)) | set(map(type, flat_q))
    if str not in kinds:
        kind = "number"
    elif kinds == {str}:
        kind = "datetime"
    else:
        return None
    rows = list(itertools.chain.from_iterable(s.values for s in items))
    if set(map(len, rows)) != {d}:
        return None
    try:
        ts = _to_unit(flat_t, kind, model.time, "", "timestamps", 0)
        tq = _to_unit(flat_q, kind, model.time, "", "query_times", 0)
    except ServiceError:
        return None
    start = np.cumsum(n_obs) - n_obs  # first observation of each series in the flat arrays
    gaps = np.diff(ts)
    gaps[start[1:] - 1] = np.inf  # differences across series boundaries do not count
    if (gaps <= 0).any():
        return None
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=len(rows) * d).reshape(-1, d)
    observed = ~np.isnan(values).all(axis=1)
    if (np.add.reduceat(observed, start) == 0).any():
        return None
    origin = ts[start]
    times = (ts - np.repeat(origin, n_obs)) * model.time.scale
    queries = (tq - np.repeat(origin, n_q)) * model.time.scale
    lo = np.minimum.reduceat(np.where(observed, times, np.inf), start)
    hi = np.maximum.reduceat(np.where(observed, times, -np.inf), start)
    dist = np.maximum(np.maximum(np.repeat(lo, n_q) - queries, queries - np.repeat(hi, n_q)), 0.0)
    if (dist > model.max_horizon).any():
        return None
    n_seen = np.add.reduceat(observed, start)
    cut = np.cumsum(n_seen)[:-1]
    kept_t = np.split(times[observed], cut)
    kept_v = np.split(values[observed].astype(np.float32), cut)
    out = [Series(id=s.id, times=t, values=v) for s, t, v in zip(items, kept_t, kept_v, strict=True)]
    return out, np.split(queries, np.cumsum(n_q)[:-1])


def prepare(req: ForecastRequest, model: ModelLimits, settings: Settings) -> Job:
    if len(req.series) > settings.max_series:
        raise ServiceError(
            413,
            f"{len(req.series)} series; the limit is {settings.max_series} (LATENTCAST_MAX_SERIES): split the request",
        )
    total = sum(len(s.timestamps) + len(s.query_times) for s in req.series)
    if total > settings.max_total_points:
        raise ServiceError(
            413,
            f"{total} observations + query times; the limit per request is "
            f"{settings.max_total_points} (LATENTCAST_MAX_TOTAL_POINTS): split the request",
        )
    for j, level in enumerate(req.quantiles):
        if not 0.0 < level < 1.0:
            raise field_error(422, f"{level} is not in (0, 1)", ["quantiles", j])
    if req.num_samples > settings.max_num_samples:
        raise field_error(
            422,
            f"{req.num_samples} exceeds the limit {settings.max_num_samples} (LATENTCAST_MAX_NUM_SAMPLES)",
            ["num_samples"],
        )
    seen: dict[str, int] = {}
    for i, s in enumerate(req.series):
        if s.id in seen:
            raise field_error(422, f"duplicate id (also series[{seen[s.id]}])", ["series", i, "id"], s.id)
        seen[s.id] = i
    fast = _all_series_at_once(req.series, model, settings)
    if fast is not None:
        series, queries = fast
    else:  # something to report (or mixed time kinds): series by series, for the precise error
        series, queries = [], []
        for i, s in enumerate(req.series):
            one, q = _series(s, i, model, settings)
            series.append(one)
            queries.append(q)
    return Job(
        model=model.name,
        series=series,
        queries=queries,
        echo=[s.query_times for s in req.series],  # pydantic built these lists: no copy
        levels=tuple(float(v) for v in req.quantiles),
        num_samples=req.num_samples,
    )
