"""Validate a forecast request against a model and turn it into a packed batch in model time.

Everything the schema cannot say is checked here, each failure a `ServiceError` naming the series id
and field: time kinds and parsing, strict ordering, row shapes, empty series, horizons, limits.
Times of a series are measured from its first observation (the dynamics are time-invariant).

Both wire formats end in `assemble`: the JSON body (`prepare`) and Arrow tables (`service.arrow`) are
first flattened to arrays over all series, then every check runs as array operations over the whole
request, and only a failing check looks for the first series and element it concerns.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models import TimeSpec
from models.data import TIME_UNITS
from models.packed import PackedSeries, locate, offsets
from service.config import Settings
from service.errors import ServiceError, field_error
from service.schemas import ForecastRequest

# show(field, i, j): element j of series i's field as the client sent it, for messages
Show = Callable[[str, int, int], str]


@dataclasses.dataclass(frozen=True)
class ModelLimits:
    """What `prepare` needs to know about a model."""

    name: str
    n_channels: int
    time: TimeSpec
    max_horizon: float  # model time


@dataclasses.dataclass
class Job:
    """One request's work in model terms: its series packed (each series' times and queries measured
    from its first observation), and what the answer echoes: the query times as sent (JSON: one list
    per series; Arrow: the flat query-time column)."""

    model: str
    packed: PackedSeries
    echo: Any
    levels: tuple[float, ...]
    num_samples: int
    # set by the batcher: seconds queued and solving, series in its batch, CUDA graphs captured meanwhile
    timing: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.packed)


def check_options(n_series: int, total: int, levels: Sequence[float], num_samples: int, settings: Settings) -> None:
    """Request-level limits (413) and options (422)."""
    if n_series > settings.max_series:
        raise ServiceError(
            413, f"{n_series} series; the limit is {settings.max_series} (LATENTCAST_MAX_SERIES): split the request"
        )
    if total > settings.max_total_points:
        raise ServiceError(
            413,
            f"{total} observations + query times; the limit per request is "
            f"{settings.max_total_points} (LATENTCAST_MAX_TOTAL_POINTS): split the request",
        )
    for j, level in enumerate(levels):
        if not 0.0 < level < 1.0:
            raise field_error(422, f"{level} is not in (0, 1)", ["quantiles", j])
    if num_samples > settings.max_num_samples:
        raise field_error(
            422,
            f"{num_samples} exceeds the limit {settings.max_num_samples} (LATENTCAST_MAX_NUM_SAMPLES)",
            ["num_samples"],
        )


def check_series(ids: Sequence[str], n_obs: np.ndarray, n_q: np.ndarray, settings: Settings) -> None:
    """Unique ids; per-series limits on observations and query times (413)."""
    if len(set(ids)) != len(ids):
        seen: dict[str, int] = {}
        for i, sid in enumerate(ids):
            if sid in seen:
                raise field_error(422, f"duplicate id (also series[{seen[sid]}])", ["series", i, "id"], sid)
            seen[sid] = i
    for counts, limit, field, what, env in (
        (n_obs, settings.max_points, "timestamps", "observations", "LATENTCAST_MAX_POINTS"),
        (n_q, settings.max_query_times, "query_times", "query times", "LATENTCAST_MAX_QUERY_TIMES"),
    ):
        over = np.flatnonzero(counts > limit)
        if over.size:
            i = int(over[0])
            raise field_error(413, f"{counts[i]} {what}; the limit is {limit} ({env})", ["series", i, field], ids[i])


def assemble(
    ids: list[str],
    ts: np.ndarray,
    n_obs: np.ndarray,
    values: np.ndarray,
    tq: np.ndarray,
    n_q: np.ndarray,
    model: ModelLimits,
    show: Show,
) -> PackedSeries:
    """The checks every format shares, over flat arrays: ts (N,) / tq (M,) times in the model's time
    unit, absolute; values (N, D) float64, NaN = not observed; n_obs / n_q per series (B,).
    Rows with nothing observed are dropped (after the ordering check); times become model time from
    each series' first observation."""
    off, qoff = offsets(n_obs), offsets(n_q)
    for name, t, o in (("timestamps", ts, off), ("query_times", tq, qoff)):
        bad = np.flatnonzero(~np.isfinite(t))
        if bad.size:
            i, j = locate(o, int(bad[0]))
            raise field_error(422, "must be a finite number", ["series", i, name, j], ids[i])
    gaps = np.diff(ts)
    gaps[off[1:-1] - 1] = np.inf  # differences across series boundaries do not count
    bad = np.flatnonzero(gaps <= 0)
    if bad.size:
        i, j = locate(off, int(bad[0]) + 1)
        raise field_error(
            422,
            f"must be strictly increasing: [{j}] = {show('timestamps', i, j)} does not come after "
            f"[{j - 1}] = {show('timestamps', i, j - 1)}",
            ["series", i, "timestamps", j],
            ids[i],
        )
    observed = ~np.isnan(values).all(axis=1)
    n_seen = np.add.reduceat(observed.astype(np.int64), off[:-1]) if len(ids) else np.zeros(0, dtype=np.int64)
    empty = np.flatnonzero(n_seen == 0)
    if empty.size:
        i = int(empty[0])
        raise field_error(422, "no observed value at all; a series needs at least one", ["series", i, "values"], ids[i])
    origin = ts[off[:-1]]
    times = (ts - np.repeat(origin, n_obs)) * model.time.scale
    queries = (tq - np.repeat(origin, n_q)) * model.time.scale
    lo = np.minimum.reduceat(np.where(observed, times, np.inf), off[:-1])
    hi = np.maximum.reduceat(np.where(observed, times, -np.inf), off[:-1])
    dist = np.maximum(np.maximum(np.repeat(lo, n_q) - queries, queries - np.repeat(hi, n_q)), 0.0)
    far = np.flatnonzero(dist > model.max_horizon)
    if far.size:
        k = int(far[0])
        i, j = locate(qoff, k)
        unit = f"{model.time.unit}s" if model.time.unit != "unitless" else "time units"
        raise field_error(
            422,
            f"{show('query_times', i, j)} lies {dist[k] / model.time.scale:.4g} {unit} from the observations; the "
            f"limit is {model.max_horizon / model.time.scale:.4g} (LATENTCAST_MAX_HORIZON_FACTOR)",
            ["series", i, "query_times", j],
            ids[i],
        )
    return PackedSeries(
        ids=ids,
        times=times[observed],
        values=values[observed].astype(np.float32),
        offsets=offsets(n_seen),
        queries=queries,
        query_offsets=qoff,
    )


def seconds_to_unit(seconds: np.ndarray, spec: TimeSpec) -> np.ndarray:
    return seconds / TIME_UNITS[spec.unit]


# ---------------------------------------------------------------------------------------------------
# JSON


def _datetimes(values: Sequence[Any], spec: TimeSpec) -> np.ndarray:
    """ISO-8601 strings → float64 in the model's time unit; ValueError/TypeError if any does not parse."""
    stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return seconds_to_unit(ns.astype(np.float64) / 1e9, spec)


def _series_times(req: ForecastRequest, model: ModelLimits) -> tuple[np.ndarray, np.ndarray]:
    """Series by series: each series' own time kind, and the precise error for what does not parse."""
    ts: list[np.ndarray] = []
    tq: list[np.ndarray] = []
    for i, s in enumerate(req.series):
        kind = _kind(s.timestamps)
        if kind is None:
            raise field_error(
                422, "mixes numbers and date-time strings; use one kind", ["series", i, "timestamps"], s.id
            )
        if _kind(s.query_times) != kind:
            raise field_error(
                422, f"must be of the same kind as timestamps ({kind}s)", ["series", i, "query_times"], s.id
            )
        for field, out in (("timestamps", ts), ("query_times", tq)):
            vals = getattr(s, field)
            if kind == "number":
                out.append(np.asarray(vals, dtype=np.float64))
                continue
            if model.time.unit == "unitless":
                raise field_error(422, "this model takes numeric times, not date-times", ["series", i, field], s.id)
            try:
                out.append(_datetimes(vals, model.time))
            except (ValueError, TypeError, OverflowError):
                for j, v in enumerate(vals):
                    try:
                        pd.to_datetime(v, utc=True, format="ISO8601")
                    except (ValueError, TypeError, OverflowError):
                        raise field_error(
                            422, f"{v!r} is not an ISO-8601 date-time", ["series", i, field, j], s.id
                        ) from None
                raise field_error(422, "unparsable date-times", ["series", i, field], s.id) from None
    return np.concatenate(ts), np.concatenate(tq)


def _kind(values: Sequence[float | str]) -> str | None:
    """ "number", "datetime", or None when mixed."""
    types = set(map(type, values))  # one C-level pass; pydantic gave floats, ints or strs
    if str not in types:
        return "number"
    return "datetime" if len(types) == 1 else None


def prepare(req: ForecastRequest, model: ModelLimits, settings: Settings) -> Job:
    """A parsed JSON body → Job. Flattens the request (a bulk request's per-series Python was ~70 µs a
    series), then `assemble` checks it as arrays."""
    items = req.series
    b, d = len(items), model.n_channels
    n_obs = np.fromiter(map(len, (s.timestamps for s in items)), dtype=np.int64, count=b)
    n_q = np.fromiter(map(len, (s.query_times for s in items)), dtype=np.int64, count=b)
    check_options(b, int(n_obs.sum() + n_q.sum()), req.quantiles, req.num_samples, settings)
    ids = [s.id for s in items]
    check_series(ids, n_obs, n_q, settings)
    n_rows = np.fromiter(map(len, (s.values for s in items)), dtype=np.int64, count=b)
    bad = np.flatnonzero(n_rows != n_obs)
    if bad.size:
        i = int(bad[0])
        raise field_error(422, f"has {n_rows[i]} rows for {n_obs[i]} timestamps", ["series", i, "values"], ids[i])
    rows = list(itertools.chain.from_iterable(s.values for s in items))
    widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = np.flatnonzero(widths != d)
    if bad.size:
        i, j = locate(offsets(n_obs), int(bad[0]))
        raise field_error(
            422,
            f"row has {widths[bad[0]]} values; model {model.name!r} has {d} channels (GET /models lists them)",
            ["series", i, "values", j],
            ids[i],
        )
    flat_t = list(itertools.chain.from_iterable(s.timestamps for s in items))
    flat_q = list(itertools.chain.from_iterable(s.query_times for s in items))
    kinds = set(map(type, flat_t)) | set(map(type, flat_q))
    try:
        if str not in kinds:  # numbers everywhere
            ts, tq = np.asarray(flat_t, dtype=np.float64), np.asarray(flat_q, dtype=np.float64)
        elif kinds == {str} and model.time.unit != "unitless":  # date-times everywhere
            ts, tq = _datetimes(flat_t, model.time), _datetimes(flat_q, model.time)
        else:
            raise ValueError("mixed kinds")
    except (ValueError, TypeError, OverflowError):  # series by series, for the precise error
        ts, tq = _series_times(req, model)
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=len(rows) * d).reshape(-1, d)

    def show(field: str, i: int, j: int) -> str:
        return repr(getattr(items[i], field)[j])

    packed = assemble(ids, ts, n_obs, values, tq, n_q, model, show)
    return Job(
        model=model.name,
        packed=packed,
        echo=[s.query_times for s in items],  # pydantic built these lists: no copy
        levels=tuple(float(v) for v in req.quantiles),
        num_samples=req.num_samples,
    )
