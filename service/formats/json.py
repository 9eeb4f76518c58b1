"""JSON bodies: `decode` (bytes → Job) and `encode` (Job + forecast → bytes).

The body is parsed by pydantic (`service.schemas.ForecastRequest`), then flattened to arrays over all
series (no per-series Python: bench/results/optimizations.md, "Host side of bulk requests") and checked
as arrays by `service.validate`. Options (model, quantiles, num_samples) are fields of the body, never the query.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from latentcast.frames import locate, offsets
from latentcast.models import PackedForecast
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError, field_error
from latentcast.service.schemas import ForecastRequest
from latentcast.service.validate import (
    Echo,
    Job,
    Lookup,
    ModelSpec,
    check_options,
    check_series,
    packed,
    solver_for,
)
from latentcast.times import TimeParseError, parse_datetimes, to_unit

MEDIA_TYPE = "application/json"
_UNION_TAGS = {"float", "str", "int", "bool", "none"}


def decode(body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job:
    """A JSON body → Job; 400 malformed JSON, 404 unknown model, 413 over a limit, 422 a bad field."""
    if params:
        raise field_error(
            422,
            "query parameters go with Arrow bodies; in JSON, put model, quantiles and num_samples in the body",
            ["query", next(iter(params))],
        )
    req = parse(body)
    model = lookup(req.model)
    items = req.series
    b, d = len(items), model.n_channels
    n_obs = np.fromiter(map(len, (s.timestamps for s in items)), dtype=np.int64, count=b)
    n_q = np.fromiter(map(len, (s.query_times for s in items)), dtype=np.int64, count=b)
    check_options(b, int(n_obs.sum() + n_q.sum()), int(n_q.sum()), d, req.quantiles, req.num_samples, settings)
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
    ts, tq = _times(req, model)
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=len(rows) * d).reshape(-1, d)

    def show(field: str, i: int, j: int) -> str:
        return repr(getattr(items[i], field)[j])

    ask = req.solver
    solver = solver_for(
        model, ask.level if ask else None, ask.rtol if ask else None, ask.atol if ask else None, settings, ["solver"]
    )
    return Job(
        model=model,
        packed=packed(ids, ts, n_obs, values, tq, n_q, model, show),
        echo=Echo(offsets(n_q), lists=[s.query_times for s in items]),  # pydantic built these lists: no copy
        levels=tuple(float(v) for v in req.quantiles),
        num_samples=req.num_samples,
        solver=solver,
    )


def parse(body: bytes) -> ForecastRequest:
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
            if not loc:  # the body as a whole: a JSON array, number, string or null
                raise ServiceError(400, f"the body must be a JSON object with a 'series' list ({e['msg']})") from None
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


def _times(req: ForecastRequest, model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Every series' timestamps and query times, flat, in the model's time unit. One pass over the whole
    request when all times are of one kind; series by series otherwise, for the precise error."""
    flat_t = list(itertools.chain.from_iterable(s.timestamps for s in req.series))
    flat_q = list(itertools.chain.from_iterable(s.query_times for s in req.series))
    kinds = set(map(type, flat_t)) | set(map(type, flat_q))
    if str not in kinds:  # numbers everywhere
        return np.asarray(flat_t, dtype=np.float64), np.asarray(flat_q, dtype=np.float64)
    if kinds == {str} and model.time.unit != "unitless":  # date-times everywhere
        try:
            return to_unit(parse_datetimes(flat_t), model.time.unit), to_unit(parse_datetimes(flat_q), model.time.unit)
        except TimeParseError:
            pass
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
                out.append(to_unit(parse_datetimes(vals), model.time.unit))
            except TimeParseError as exc:
                raise field_error(
                    422, f"{exc.value!r} is {exc.reason}", ["series", i, field, exc.index], s.id
                ) from None
    return np.concatenate(ts), np.concatenate(tq)


def _kind(values: Sequence[float | str]) -> str | None:
    """ "number", "datetime", or None when mixed."""
    types = set(map(type, values))  # one C-level pass; pydantic gave floats, ints or strs
    if str not in types:
        return "number"
    return "datetime" if len(types) == 1 else None


def answer_bytes(job: Job) -> int:
    """An upper bound on the size of `encode`'s answer, known before solving: every number at most 16
    bytes (a float32's shortest form and a separator), each query time echoed in at most 48, each
    series' id (escaped) and keys."""
    n_q = len(job.packed.queries)
    ids = sum(len(i.encode()) for i in job.packed.ids)
    return 16 * job.answer_values + 48 * n_q + 2 * ids + len(job.packed) * (128 + 16 * len(job.levels)) + 4096


def encode(job: Job, fc: PackedForecast) -> bytes:
    """Forecasts → the JSON response body (orjson writes the numpy slices directly)."""
    where = {lv: j for j, lv in enumerate(fc.levels)}
    cols = [where[lv] for lv in job.levels]
    keys = [repr(lv) for lv in job.levels]
    q = fc.query_offsets.tolist()
    forecasts = []
    nfe = fc.nfe.tolist()
    for sid, echo, a, z, n in zip(fc.ids, job.echo.as_lists(), q[:-1], q[1:], nfe, strict=True):
        out: dict[str, Any] = {
            "id": sid,
            "nfe": round(n, 2),
            "query_times": echo,
            "mean": fc.mean[a:z],
            "quantiles": {k: fc.quantiles[c, a:z] for k, c in zip(keys, cols, strict=True)},
        }
        if job.num_samples and fc.samples is not None:
            out["samples"] = np.ascontiguousarray(fc.samples[: job.num_samples, a:z])
        forecasts.append(out)
    payload = {
        "model": {"name": job.model.name, "version": job.model.version},
        "channels": list(job.model.channels),
        "solver": job.solver_used.used(),
        "forecasts": forecasts,
    }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
