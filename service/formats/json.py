"""JSON bodies: `decode` (bytes → Job) and `encode` (Job + forecast → bytes).

The body is parsed by pydantic (`service.schemas.ForecastRequest`), then flattened to arrays over all
series (no per-series Python: bench/results/optimizations.md, "Host side of bulk requests") and checked
as arrays by `service.validate`. Options (model, quantiles, num_samples) are fields of the body, never the query.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import jiter
import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from latentcast.frames import offsets
from latentcast.models import Issue
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError, field_error
from latentcast.service.outcome import Outcome
from latentcast.service.schemas import ForecastOptions, SeriesIn
from latentcast.service.validate import (
    Echo,
    Job,
    Lookup,
    ModelSpec,
    build_job,
    check_inputs,
    check_options,
    check_series,
    first_per_series,
    solver_for,
)
from latentcast.times import TimeParseError, parse_datetimes, to_unit

MEDIA_TYPE = "application/json"
_UNION_TAGS = {"float", "str", "int", "bool", "none"}
_SERIES = TypeAdapter(list[SeriesIn])
CHUNK = 256  # series per validation call


def decoded_size(body: bytes) -> int:
    return len(body)


def decode(body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job:
    """A JSON body → Job; 400 malformed JSON, 404 unknown model, 413 over a limit, 422 a bad field or
    refused series (each listed)."""
    if params:
        raise field_error(
            422,
            "query parameters go with Arrow bodies; in JSON, put model, quantiles and num_samples in the body",
            ["query", next(iter(params))],
        )
    doc = document(body)
    opts = _options(doc)
    raw = doc.get("series")
    if not isinstance(raw, list) or not raw:
        raise field_error(422, "Field required" if raw is None else "must be a non-empty list of series", ["series"])
    if len(raw) > settings.max_series:
        check_options(len(raw), 0, 0, 0, [], 0, settings)
    model = lookup(opts.model)
    every_id = [_id_of(s) for s in raw]
    items, positions, pre = _series(raw, every_id, opts.on_error)
    b, d = len(items), model.n_channels
    n_obs = np.fromiter(map(len, (s.timestamps for s in items)), dtype=np.int64, count=b)
    n_q = np.fromiter(map(len, (s.query_times for s in items)), dtype=np.int64, count=b)
    n_ev = sum(len(s.event_times) for s in items)  # events are points too: they cost memory and time
    points = int(n_obs.sum() + n_q.sum()) + n_ev
    check_options(len(raw), points, int(n_q.sum()), d, opts.quantiles, opts.num_samples, settings)
    found = first_per_series(
        [
            *check_series([s.id for s in items], n_obs, n_q, positions, settings),
            *_shapes(items, positions, d, model),
            *_time_kinds(items, positions, model),
        ]
    )
    items, positions = _without(items, positions, found)
    ts, tq, more = _times(items, positions, model)
    if more:  # a date-time that does not parse: those series out, the rest again
        items, positions = _without(items, positions, more)
        ts, tq, _ = _times(items, positions, model)
    held: list[Any] = []
    bad_inputs: list[Issue] = []
    if model.inputs or any(x.event_times or x.event_values or x.static is not None for x in items):
        held, bad_inputs = _inputs(items, positions, model, settings)
    if bad_inputs:  # those series out, the rest again
        items, positions = _without(items, positions, bad_inputs)
        ts, tq, _ = _times(items, positions, model)
        held, _ = _inputs(items, positions, model, settings)
        more = [*more, *bad_inputs]
    n_obs = np.fromiter(map(len, (s.timestamps for s in items)), dtype=np.int64, count=len(items))
    n_q = np.fromiter(map(len, (s.query_times for s in items)), dtype=np.int64, count=len(items))
    rows = list(itertools.chain.from_iterable(s.values for s in items))
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=len(rows) * d).reshape(-1, d)

    def show(field: str, i: int, j: int) -> str:
        return repr(getattr(items[i], field)[j])

    ask = opts.solver
    solver = solver_for(
        model, ask.level if ask else None, ask.rtol if ask else None, ask.atol if ask else None, settings, ["solver"]
    )
    return build_job(
        model,
        every_id,
        (ts, n_obs, values, tq, n_q),
        positions,
        show,
        sorted([*pre, *found, *more], key=lambda x: x.series),
        Echo(offsets(n_q), lists=[s.query_times for s in items]),  # pydantic built these lists: no copy
        tuple(float(v) for v in opts.quantiles),
        opts.num_samples,
        solver,
        opts.on_error,
        held if model.inputs else None,
    )


def _inputs(
    items: list[SeriesIn], positions: np.ndarray, model: ModelSpec, settings: Settings
) -> tuple[list[Any], list[Issue]]:
    """Each series' events and statics (`check_inputs`), after their shapes and times: a row of event values
    per event time, a value per event kind, a value per static covariate, event times of the series' kind."""
    e, s = len(model.inputs.events), len(model.inputs.static)
    issues: list[Issue] = []
    ev_t: list[np.ndarray] = []
    ev_v: list[np.ndarray] = []
    static = np.full((len(items), s), np.nan)
    for k, x in enumerate(items):
        p = int(positions[k])
        times, rows, st = x.event_times, x.event_values, x.static
        if (times or rows) and not e:
            issues.append(Issue(p, "event_times", None, f"model {model.name!r} takes no events (GET /models)"))
        elif len(rows) != len(times):
            issues.append(Issue(p, "event_values", None, f"has {len(rows)} rows for {len(times)} event times"))
        elif any(len(r) != e for r in rows):
            j = next(i for i, r in enumerate(rows) if len(r) != e)
            msg = f"row has {len(rows[j])} values; model {model.name!r} takes {e} event kinds (GET /models: events)"
            issues.append(Issue(p, "event_values", j, msg))
        elif st is not None and not s and any(v is not None for v in st):
            issues.append(Issue(p, "static", None, f"model {model.name!r} takes no static covariates (GET /models)"))
        elif st is not None and len(st) != s and s:
            msg = f"has {len(st)} values; model {model.name!r} takes {s} static covariates (GET /models: static)"
            issues.append(Issue(p, "static", None, msg))
        elif times and _kind(times) != _kind(x.timestamps):
            issues.append(
                Issue(p, "event_times", None, f"must be of the same kind as timestamps ({_kind(x.timestamps)}s)")
            )
        else:
            try:
                ev_t.append(
                    np.asarray(times, dtype=np.float64)
                    if _kind(times) == "number"
                    else to_unit(parse_datetimes(times), model.time.unit)
                )
            except TimeParseError as exc:
                issues.append(Issue(p, "event_times", exc.index, f"{exc.value!r} is {exc.reason}"))
                continue
            vals = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
            ev_v.append(vals.reshape(len(rows), e))
            if st is not None and s:
                static[k] = [np.nan if v is None else v for v in st]
            continue
        ev_t.append(np.zeros(0))
        ev_v.append(np.zeros((0, e)))
    if issues:
        return [], first_per_series(issues)
    n_ev = np.fromiter(map(len, ev_t), dtype=np.int64, count=len(ev_t))
    flat_t = np.concatenate(ev_t) if ev_t else np.zeros(0)
    flat_v = np.concatenate(ev_v) if ev_v else np.zeros((0, e))
    held, found = check_inputs(model, positions, flat_t, n_ev, flat_v, static, settings)
    return held, found


def _id_of(s: Any) -> str | None:
    """A series' id for messages (None when it has no string id)."""
    sid = s.get("id") if isinstance(s, dict) else None
    return sid if isinstance(sid, str) else None


def _without(
    items: list[SeriesIn], positions: np.ndarray, issues: Sequence[Issue]
) -> tuple[list[SeriesIn], np.ndarray]:
    """The series no issue is about."""
    if not issues:
        return items, positions
    bad = {x.series for x in issues}
    keep = [k for k, p in enumerate(positions.tolist()) if p not in bad]
    return [items[k] for k in keep], positions[keep]


def document(body: bytes) -> dict[str, Any]:
    """JSON bytes → the request object; 400 for malformed JSON, a key given twice, or not an object."""
    if not body.strip():
        raise ServiceError(400, "malformed JSON: empty body")
    try:
        doc = jiter.from_json(body, catch_duplicate_keys=True)
    except ValueError as exc:
        what = str(exc)
        if "duplicate key" in what:
            raise ServiceError(400, f"{what}: send each key of an object once") from None
        raise ServiceError(400, f"malformed JSON: {what}{_looks_like(body)}") from None
    if not isinstance(doc, dict):
        raise ServiceError(400, "the body must be a JSON object with a 'series' list")
    return doc


def _looks_like(body: bytes) -> str:
    """What a body that is not JSON text seems to be, when it says so in its first bytes."""
    if body[:2] == b"\x1f\x8b":
        return " (the body is gzip-compressed: say so with Content-Encoding: gzip)"
    if body[:3] == b"\xef\xbb\xbf":
        return " (the body starts with a UTF-8 byte-order mark: send it without one)"
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        return " (the body looks like UTF-16 or UTF-32: send UTF-8)"
    return ""


def _options(doc: dict[str, Any]) -> ForecastOptions:
    """Every field but `series`, strictly typed; a 422 listing each bad one."""
    try:
        return ForecastOptions.model_validate({k: v for k, v in doc.items() if k != "series"})
    except ValidationError as exc:
        items = _items(exc, [], {})
        err = field_error(422, items[0]["msg"], items[0]["loc"])
        err.errors = items
        raise err from None


def _series(
    raw: list[Any], every_id: list[str | None], on_error: str
) -> tuple[list[SeriesIn], np.ndarray, list[Issue]]:
    """The series that validate, their request indices, and an issue for each that does not. An
    all-or-nothing request gets every error pydantic found (a 422) at once. Validated CHUNK series at a
    time: one call over 10,000 series holds the GIL for a tenth of a second, and the event loop with it."""
    good: list[SeriesIn] = []
    items: list[dict[str, Any]] = []
    for start in range(0, len(raw), CHUNK):
        try:
            good += _SERIES.validate_python(raw[start : start + CHUNK])
        except ValidationError as exc:
            found = _items(exc, ["series"], {})
            for e in found:
                e["loc"][1] += start
                e["series_id"] = every_id[e["loc"][1]]
            items += found
    if not items:
        return good, np.arange(len(raw)), []
    if on_error == "raise":
        err = field_error(422, items[0]["msg"], items[0]["loc"], items[0]["series_id"])
        n = len({str(i["loc"][1]) for i in items})
        if n > 1:
            err.detail = f"{n} series refused (send on_error=skip to have the others answered); the first: {err.detail}"
        err.errors = items
        raise err
    issues: dict[int, Issue] = {}
    for e in items:
        loc = e["loc"]
        field = str(loc[2]) if len(loc) > 2 else "series"
        index = loc[3] if len(loc) > 3 and isinstance(loc[3], int) else None
        issues.setdefault(int(loc[1]), Issue(int(loc[1]), field, index, e["msg"]))
    keep = np.asarray([i for i in range(len(raw)) if i not in issues], dtype=np.int64)
    kept = [raw[i] for i in keep.tolist()]
    good = [s for start in range(0, len(kept), CHUNK) for s in _SERIES.validate_python(kept[start : start + CHUNK])]
    return good, keep, [issues[k] for k in sorted(issues)]


def _items(exc: ValidationError, prefix: list[str | int], ids: dict[int, str | None]) -> list[dict[str, Any]]:
    """Pydantic's errors as error items (loc, msg, series_id), a union's branch errors reported once."""
    items: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in exc.errors(include_url=False):
        loc = [*prefix, *e["loc"]]
        union = isinstance(loc[-1], str) and loc[-1] in _UNION_TAGS and len(loc) > 1
        if union:  # one error per branch of `number | string`: report the field once
            loc = loc[:-1]
        msg = e["msg"]
        if union and len(loc) > 1 and loc[-2] in ("timestamps", "query_times") and "finite" not in msg:
            msg = "must be a number or an ISO-8601 date-time string"
        sid = ids.get(loc[1]) if len(loc) > 1 and loc[0] == "series" and isinstance(loc[1], int) else None
        prev = items.get(tuple(loc))
        if prev is None or "finite" in msg:  # of a union's branch errors, "finite" says the most
            items[tuple(loc)] = {"loc": loc, "msg": msg, "series_id": sid}
    return list(items.values())


def _shapes(items: list[SeriesIn], positions: np.ndarray, d: int, model: ModelSpec) -> list[Issue]:
    """A row per timestamp, a value per channel in each row."""
    issues = []
    for k, s in enumerate(items):
        p = int(positions[k])
        if len(s.values) != len(s.timestamps):
            issues.append(Issue(p, "values", None, f"has {len(s.values)} rows for {len(s.timestamps)} timestamps"))
            continue
        widths = np.fromiter(map(len, s.values), dtype=np.int64, count=len(s.values))
        bad = np.flatnonzero(widths != d)
        if bad.size:
            j = int(bad[0])
            msg = f"row has {widths[j]} values; model {model.name!r} has {d} channels (GET /models lists them)"
            issues.append(Issue(p, "values", j, msg))
    return issues


def _time_kinds(items: list[SeriesIn], positions: np.ndarray, model: ModelSpec) -> list[Issue]:
    """Times all numbers or all date-times within a series; date-times only for models with a unit."""
    kinds = {type(t) for s in items for t in itertools.chain(s.timestamps, s.query_times)}
    if len(kinds) <= 1 and (str not in kinds or model.time.unit != "unitless"):
        return []
    issues = []
    for k, s in enumerate(items):
        p = int(positions[k])
        kind = _kind(s.timestamps)
        if kind is None:
            issues.append(Issue(p, "timestamps", None, "mixes numbers and date-time strings; use one kind"))
        elif _kind(s.query_times) != kind:
            issues.append(Issue(p, "query_times", None, f"must be of the same kind as timestamps ({kind}s)"))
        elif kind == "datetime" and model.time.unit == "unitless":
            issues.append(Issue(p, "timestamps", None, "this model takes numeric times, not date-times"))
    return issues


def _times(
    items: list[SeriesIn], positions: np.ndarray, model: ModelSpec
) -> tuple[np.ndarray, np.ndarray, list[Issue]]:
    """Every series' timestamps and query times, flat, in the model's time unit, and an issue for each
    series with a date-time that does not parse. One pass over the whole request when all times are of
    one kind; series by series otherwise, for the precise error."""
    flat_t = list(itertools.chain.from_iterable(s.timestamps for s in items))
    flat_q = list(itertools.chain.from_iterable(s.query_times for s in items))
    kinds = set(map(type, flat_t)) | set(map(type, flat_q))
    if str not in kinds:  # numbers everywhere
        return np.asarray(flat_t, dtype=np.float64), np.asarray(flat_q, dtype=np.float64), []
    unit = model.time.unit
    if kinds == {str}:  # date-times everywhere
        try:
            return to_unit(parse_datetimes(flat_t), unit), to_unit(parse_datetimes(flat_q), unit), []
        except TimeParseError:
            pass
    ts: list[np.ndarray] = []
    tq: list[np.ndarray] = []
    issues: list[Issue] = []
    for k, s in enumerate(items):
        for field, out in (("timestamps", ts), ("query_times", tq)):
            vals = getattr(s, field)
            if _kind(vals) == "number":
                out.append(np.asarray(vals, dtype=np.float64))
                continue
            try:
                out.append(to_unit(parse_datetimes(vals), unit))
            except TimeParseError as exc:
                issues.append(Issue(int(positions[k]), field, exc.index, f"{exc.value!r} is {exc.reason}"))
    if issues:
        return np.zeros(0), np.zeros(0), first_per_series(issues)
    return np.concatenate(ts), np.concatenate(tq), []


def _kind(values: Sequence[float | str]) -> str | None:
    """ "number", "datetime", or None when mixed."""
    types = set(map(type, values))  # one C-level pass; pydantic gave floats, ints or strs
    if str not in types:
        return "number"
    return "datetime" if len(types) == 1 else None


def answer_bytes(job: Job) -> int:
    """An upper bound on the size of `encode`'s answer, known before solving: every number at most 16
    bytes (a float32's shortest form and a separator), each query time echoed in at most 48, each
    series' id (escaped) and keys, and its errors and warnings."""
    n_q = len(job.packed.queries)
    ids = sum(len(i.encode()) for i in job.packed.ids)
    per_series = len(job.packed) * (160 + 16 * len(job.levels))
    return 16 * job.answer_values + 48 * n_q + 2 * ids + per_series + job.notes_bytes() + 4096


def encode(job: Job, out: Outcome) -> memoryview:
    """Forecasts → the JSON response body (orjson writes the numpy slices directly). Written in pieces, a
    series and then a sampled trajectory at a time, and copied piece by piece into one buffer: a thread
    encoding a large answer lets the event loop run between pieces instead of holding the GIL for the
    whole answer (bench/results/serving_under_load.md)."""
    fc = out.fc
    where = {lv: j for j, lv in enumerate(fc.levels)}
    cols = [where[lv] for lv in job.levels]
    keys = [repr(lv) for lv in job.levels]
    q = fc.query_offsets.tolist()
    nfe = fc.nfe.tolist()
    opt = orjson.OPT_SERIALIZE_NUMPY
    pieces = [b'{"forecasts":[']
    for i, (sid, echo, a, z, n, notes) in enumerate(
        zip(fc.ids, out.echo.as_lists(), q[:-1], q[1:], nfe, out.warnings, strict=True)
    ):
        item: dict[str, Any] = {
            "id": sid,
            "nfe": round(n, 2),
            "query_times": echo,
            "point": fc.point[a:z],
            "mean": fc.mean[a:z],
            "quantiles": {k: fc.quantiles[c, a:z] for k, c in zip(keys, cols, strict=True)},
            "warnings": notes,
        }
        pieces.append(b"," if i else b"")
        head = orjson.dumps(item, option=opt)
        if not (job.num_samples and fc.samples is not None):
            pieces.append(head)
            continue
        pieces += [head[:-1], b',"samples":[']
        for k in range(job.num_samples):
            pieces += [b"," if k else b"", orjson.dumps(fc.samples[k, a:z], option=opt)]
        pieces.append(b"]}")
    rest = {
        "model": {"name": job.model.name, "version": job.model.version},
        "channels": list(job.model.channels),
        "solver": job.solver_used.used(),
        "errors": out.errors,
    }
    pieces += [b"],", orjson.dumps(rest)[1:]]
    body = bytearray(sum(map(len, pieces)))
    at = 0
    for piece in pieces:  # one short copy each, not one long join
        body[at : at + len(piece)] = piece
        at += len(piece)
    return memoryview(body)
