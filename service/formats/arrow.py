"""Arrow IPC bodies: `decode` (bytes + query parameters → Job) and `encode` (Job + forecast → bytes).

A columnar body for bulk requests: read and written without touching each number in Python. The
request and response layouts are in `latentcast.arrowio` (the client writes what this reads). Errors
are JSON, as for every request, with the same locations and messages as the JSON format.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latentcast.arrowio import COLUMNS, INPUT_COLUMNS, MEDIA_TYPE
from latentcast.frames import long_layout, offsets, quantile_column
from latentcast.models import Issue, SolverConfig
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError, field_error
from latentcast.service.formats.ipc_limits import IpcLimitError, declared_bytes, read_limited
from latentcast.service.outcome import Outcome
from latentcast.service.validate import (
    ON_ERROR,
    Echo,
    Job,
    Lookup,
    ModelSpec,
    build_job,
    check_inputs,
    check_options,
    check_series,
    solver_for,
)
from latentcast.times import END_SECOND, FIRST_SECOND, to_unit

__all__ = ["MEDIA_TYPE", "answer_bytes", "decode", "decoded_size", "encode"]
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def decoded_size(body: bytes) -> int:
    """The bytes decoding will handle: with IPC compression, what the buffers inflate to."""
    return declared_bytes(body)


def decode(body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job:
    """An Arrow request → Job, with the same checks and messages as the JSON format. Options come from
    the query string or the stream's schema metadata (the same names; one place per option)."""
    table = _read_table(body, settings)
    opts = _options(params, table.schema.metadata or {})
    model = lookup(opts.get("model"))  # absent: the default; "" is refused, as in JSON
    level = opts.get("solver") or None
    solver = solver_for(model, level, _tolerance(opts, "rtol"), _tolerance(opts, "atol"), settings, ["query"])
    return _job(table, opts, model, settings, solver)


OPTIONS = ("model", "quantiles", "num_samples", "solver", "rtol", "atol", "on_error")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _options(params: Mapping[str, str], metadata: Mapping[bytes, bytes]) -> dict[str, str]:
    """The request's options: query parameters, or schema metadata keys of the same names."""
    unknown = sorted(set(params) - set(OPTIONS))
    if unknown:
        raise field_error(422, f"unknown parameter; use {', '.join(OPTIONS)}", ["query", unknown[0]])
    opts = dict(params)
    for key, raw in metadata.items():  # other keys (pandas' own, say) are not ours to read
        name = key.decode("utf-8", "replace")
        if name in OPTIONS:
            if name in opts:
                raise ServiceError(
                    400, f"option {name!r} is given both in the query string and in the stream's metadata"
                )
            opts[name] = raw.decode("utf-8", "replace")
    if opts.get("on_error", "raise") not in ON_ERROR:
        raise field_error(422, f"must be one of {', '.join(ON_ERROR)}", ["query", "on_error"])
    return opts


def _tolerance(opts: Mapping[str, str], name: str) -> float | None:
    if name not in opts:
        return None
    value = _number(opts[name], ["query", name], "a number, e.g. 1e-5")
    if not 0 < value < 1:
        raise field_error(422, f"{value:g} is not in (0, 1)", ["query", name])
    return value


def _number(text: str, loc: list[str | int], what: str) -> float:
    """A decimal number written plainly (ASCII digits, no '_' or spaces: float() would take '0_5' as 5)."""
    if not _NUMBER.fullmatch(text):
        raise field_error(422, f"{text!r} is not {what}", loc)
    return float(text)


def _levels_and_samples(opts: Mapping[str, str]) -> tuple[tuple[float, ...], int]:
    levels: tuple[float, ...] = (0.1, 0.5, 0.9)
    if "quantiles" in opts:
        parts = [p.strip() for p in opts["quantiles"].split(",")] if opts["quantiles"].strip() else []  # none
        levels = tuple(
            _number(p, ["query", "quantiles"], "a number (levels comma-separated, e.g. 0.1,0.5,0.9)") for p in parts
        )
    raw = opts.get("num_samples", "0")
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise field_error(422, f"{raw!r} is not a whole number ≥ 0", ["query", "num_samples"])
    return levels, int(raw)


def _read_table(body: bytes, settings: Settings) -> pa.Table:
    """An Arrow IPC stream → table: 400 when it is not a valid one, 413 when its headers say it holds more
    rows or (decompressed) bytes than allowed, before anything is decompressed; 422 for missing, unknown
    or repeated columns."""
    try:
        table = read_limited(body, settings.max_series, settings.max_body_bytes)
    except IpcLimitError as exc:
        if exc.limit == "rows":
            raise ServiceError(413, f"Arrow body with {exc} (LATENTCAST_MAX_SERIES): split the request") from None
        if exc.limit == "bytes":
            raise ServiceError(413, f"Arrow body with {exc} (LATENTCAST_MAX_BODY_BYTES)") from None
        raise ServiceError(400, f"malformed Arrow IPC stream: {exc}") from None
    except pa.ArrowMemoryError:
        raise ServiceError(413, "the Arrow body does not fit in memory (LATENTCAST_MAX_BODY_BYTES)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ServiceError(400, f"malformed Arrow IPC stream: {str(exc).splitlines()[0][:200]}") from None
    names = table.column_names
    twice = sorted(c for c, n in collections.Counter(names).items() if n > 1)  # linear: bodies may hold many
    if twice:
        raise field_error(422, "the column appears more than once; send each column once", ["columns", twice[0]])
    missing = [c for c in COLUMNS if c not in names]
    unknown = [c for c in names if c not in (*COLUMNS, *INPUT_COLUMNS)]
    if missing or unknown:
        col = (missing or unknown)[0]
        what = "missing column" if missing else "unknown column"
        raise field_error(
            422,
            f"{what}; the table needs the columns {', '.join(COLUMNS)} (and, for a model with inputs, "
            f"{', '.join(INPUT_COLUMNS)})",
            ["columns", col],
        )
    return table


def _float64(arr: pa.Array, loc: list[str | int]) -> np.ndarray:
    """Numbers → float64, NaN for nulls; integers that float64 cannot hold exactly (|x| > 2^53) are a 422."""
    try:
        return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except pa.ArrowInvalid:
        raise field_error(422, "integers must lie within ±2^53 (float64's exact range); send doubles", loc) from None


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _nulls(arr: pa.Array) -> np.ndarray:
    return np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)) if arr.null_count else np.zeros(0, np.int64)


class _Issues:
    """Per-series issues of an Arrow table (the first of each series kept), by row index."""

    def __init__(self) -> None:
        self.found: dict[int, Issue] = {}

    def add(self, i: int, field: str, j: int | None, msg: str, status: int = 422) -> None:
        self.found.setdefault(i, Issue(i, field, j, msg, status=status))

    def at_elements(self, elems: np.ndarray, offs: np.ndarray, field: str, msg: Callable[[int], str]) -> None:
        """An issue for the series owning each of the flat elements `elems` (sorted): the first of each."""
        if not elems.size:
            return
        owner = np.searchsorted(offs, elems, side="right") - 1
        series, first = np.unique(owner, return_index=True)
        for i, k in zip(series.tolist(), first.tolist(), strict=True):
            self.add(i, field, int(elems[k] - offs[i]), msg(int(elems[k])))


def _list_column(table: pa.Table, name: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A list column → (its flat elements, elements per series, null series)."""
    col = _column(table, name)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise field_error(422, f"column must be a list per series, not {col.type}", ["columns", name])
    counts = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return col.flatten(), counts, _nulls(col)


def _time_kind(flat: pa.Array, name: str, model: ModelSpec) -> str:
    t = flat.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if model.time.unit == "unitless":
            raise field_error(422, "this model takes numeric times, not date-times", ["columns", name])
        return "datetime"
    if pa.types.is_null(t):
        return "none"
    raise field_error(422, f"must hold numbers (the model's time unit) or timestamps, not {t}", ["columns", name])


def _times(flat: pa.Array, offs: np.ndarray, name: str, model: ModelSpec, issues: _Issues) -> np.ndarray:
    """Flat times → float64 in the model's time unit; an issue for each series with a null time or a
    date-time outside the years 0001–9999."""
    issues.at_elements(_nulls(flat), offs, name, lambda k: "must not be null")
    t = flat.type
    if not (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        return _float64(flat, ["columns", name]) if not pa.types.is_null(t) else np.full(len(flat), np.nan)
    unit = t.unit if pa.types.is_timestamp(t) else "ms"
    if pa.types.is_date(t):
        flat = pc.cast(flat, pa.timestamp("ms"))
    raw = pc.cast(flat, pa.int64()).fill_null(0).to_numpy()  # since the epoch, UTC (naive times are taken as UTC)
    per = _PER_SECOND[unit]
    whole = raw // int(per)
    out = np.flatnonzero((whole < FIRST_SECOND) | (whole >= END_SECOND))
    issues.at_elements(out, offs, name, lambda k: f"{raw[k]} {unit} since 1970 is outside the years 0001–9999")
    seconds = whole.astype(np.float64) + (raw - whole * int(per)).astype(np.float64) / per
    return to_unit(seconds, model.time.unit)


def _job(table: pa.Table, opts: Mapping[str, str], model: ModelSpec, settings: Settings, solver: SolverConfig) -> Job:
    levels, num_samples = _levels_and_samples(opts)
    b, d = table.num_rows, model.n_channels
    if b == 0:
        raise field_error(422, "the table has no rows; send one row per series", ["series"])
    id_col = _column(table, "id")
    if not (pa.types.is_string(id_col.type) or pa.types.is_large_string(id_col.type)):
        raise field_error(422, f"column must be strings, not {id_col.type}", ["columns", "id"])
    every_id: list[str | None] = id_col.to_pylist()
    issues = _Issues()
    for i in _nulls(id_col).tolist():
        issues.add(i, "id", None, "must not be null")
    lengths = pc.utf8_length(id_col).fill_null(1).to_numpy()
    for i in np.flatnonzero((lengths < 1) | (lengths > 256)).tolist():
        issues.add(i, "id", None, "must have 1 to 256 characters")
    flat_t, n_obs, null_t = _list_column(table, "timestamps")
    flat_q, n_q, null_q = _list_column(table, "query_times")
    rows, n_rows, null_v = _list_column(table, "values")
    for nulls, name in ((null_t, "timestamps"), (null_q, "query_times"), (null_v, "values")):
        for i in nulls.tolist():
            issues.add(i, name, None, "must not be null")
    n_ev = 0  # events are points too: they cost memory and time
    if "event_times" in table.column_names:
        col = _column(table, "event_times")
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):  # anything else: a 422 below
            n_ev = int(pc.sum(col.value_lengths()).as_py() or 0)
    check_options(b, int(n_obs.sum() + n_q.sum()) + n_ev, int(n_q.sum()), d, levels, num_samples, settings)
    for counts, name in ((n_obs, "timestamps"), (n_q, "query_times")):
        for i in np.flatnonzero(counts == 0).tolist():
            issues.add(i, name, None, "must hold at least one time")
    for x in check_series([v or "" for v in every_id], n_obs, n_q, np.arange(b), settings):
        issues.add(x.series, x.field, x.index, x.msg, x.status)
    kind, qkind = _time_kind(flat_t, "timestamps", model), _time_kind(flat_q, "query_times", model)
    if "none" not in (kind, qkind) and qkind != kind:
        raise field_error(422, f"must be of the same kind as timestamps ({kind}s)", ["columns", "query_times"])
    off_t, off_q = offsets(n_obs), offsets(n_q)
    ts = _times(flat_t, off_t, "timestamps", model, issues)
    tq = _times(flat_q, off_q, "query_times", model, issues)
    values = _values(rows, n_rows, n_obs, d, model.name, issues)
    ok = np.ones(b, dtype=bool)
    ok[list(issues.found)] = False
    keep = np.flatnonzero(ok)
    obs_rows, q_rows = np.repeat(ok, n_obs), np.repeat(ok, n_q)
    sub_t, sub_q = off_t[keep], off_q[keep]

    def show(field: str, i: int, j: int) -> str:
        flat, starts = (flat_t, sub_t) if field == "timestamps" else (flat_q, sub_q)
        v = flat[int(starts[i]) + j].as_py()
        return repr(v) if isinstance(v, int | float) else repr(str(v))

    held = None
    if model.inputs or any(c in table.column_names for c in INPUT_COLUMNS):
        every, found = _inputs(table, kind, model, settings, issues)
        for x in found:
            issues.add(x.series, x.field, x.index, x.msg, x.status)
        ok[list(issues.found)] = False
        keep = np.flatnonzero(ok)
        held = [every[i] for i in keep.tolist()]
        obs_rows, q_rows = np.repeat(ok, n_obs), np.repeat(ok, n_q)
        sub_t, sub_q = off_t[keep], off_q[keep]
    return build_job(
        model,
        every_id,
        (ts[obs_rows], n_obs[keep], values[obs_rows], tq[q_rows], n_q[keep]),
        keep,
        show,
        [issues.found[i] for i in sorted(issues.found)],
        Echo(off_q, array=flat_q).take(keep),
        levels,
        num_samples,
        solver,
        "skip" if opts.get("on_error") == "skip" else "raise",
        held,
    )


def _inputs(
    table: pa.Table, kind: str, model: ModelSpec, settings: Settings, issues: _Issues
) -> tuple[list[Any], list[Issue]]:
    """Every row's events and statics from the optional columns (`check_inputs`), and the issues found."""
    b, e, s = table.num_rows, len(model.inputs.events), len(model.inputs.static)
    names = table.column_names
    if "event_times" in names:
        flat_e, n_ev, _ = _list_column(table, "event_times")
        ekind = _time_kind(flat_e, "event_times", model)
        if "none" not in (kind, ekind) and ekind != kind:
            raise field_error(422, f"must be of the same kind as timestamps ({kind}s)", ["columns", "event_times"])
        ev_t = _times(flat_e, offsets(n_ev), "event_times", model, issues)
    else:
        n_ev, ev_t = np.zeros(b, dtype=np.int64), np.zeros(0)
    if not e or "event_values" not in names:
        ev_v = np.full((int(n_ev.sum()), e), np.nan)
        if e:
            for i in np.flatnonzero(n_ev > 0).tolist():
                issues.add(i, "event_values", None, "event times need event_values (a row per event time)")
    else:
        rows, n_rows, _ = _list_column(table, "event_values")
        ev_v = _values(rows, n_rows, n_ev, e, model.name, issues, "event_values", "event times", "event kinds")
    static = np.full((b, s), np.nan)
    if "static" in names:
        flat_s, n_s, _ = _list_column(table, "static")
        kind = flat_s.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
            raise field_error(422, f"static must be numbers, not {kind}", ["columns", "static"])
        null = pa.types.is_null(flat_s.type)
        vals = np.full(len(flat_s), np.nan) if null else _float64(flat_s, ["columns", "static"])
        off_s = offsets(n_s)
        for i in range(b):
            got = vals[off_s[i] : off_s[i + 1]]
            if got.size and not s and not np.isnan(got).all():
                issues.add(i, "static", None, f"model {model.name!r} takes no static covariates (GET /models)")
            elif got.size and s and got.size != s:
                msg = f"has {got.size} values; model {model.name!r} takes {s} static covariates (GET /models: static)"
                issues.add(i, "static", None, msg)
            elif got.size and s:
                static[i] = got
    return check_inputs(model, np.arange(b), ev_t, n_ev, ev_v, static, settings)


def _values(
    rows: pa.Array,
    n_rows: np.ndarray,
    n_obs: np.ndarray,
    d: int,
    name: str,
    issues: _Issues,
    field: str = "values",
    per: str = "timestamps",
    what: str = "channels",
) -> np.ndarray:
    """The values column → (N, D) float64 aligned with the timestamps, NaN where not observed (and in
    series refused for the shape of their rows); an issue for each series whose rows are not one per
    timestamp, each of D values, finite or null."""
    for i in np.flatnonzero(n_rows != n_obs).tolist():
        issues.add(i, field, None, f"has {n_rows[i]} rows for {n_obs[i]} {per}")
    offs = offsets(n_rows)
    out = np.full((int(n_obs.sum()), d), np.nan)
    if pa.types.is_null(rows.type):
        return out
    if pa.types.is_fixed_size_list(rows.type):
        width = rows.type.list_size
        widths = np.full(len(rows), width)
        starts = (np.arange(len(rows)) + rows.offset) * width
    elif pa.types.is_list(rows.type) or pa.types.is_large_list(rows.type):
        bounds = rows.offsets.to_numpy()
        widths, starts = np.diff(bounds), bounds[:-1]
    else:
        raise field_error(422, f"column must be a list of rows (lists) per series, not {rows.type}", ["columns", field])
    issues.at_elements(
        _nulls(rows), offs, field, lambda k: "row must not be null (null values inside it mean not observed)"
    )
    issues.at_elements(
        np.flatnonzero(widths != d),
        offs,
        field,
        lambda k: f"row has {widths[k]} values; model {name!r} has {d} {what} (GET /models lists them)",
    )
    child = rows.values
    t = child.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
        raise field_error(422, f"{field} must be numbers, not {t}", ["columns", field])
    flat = _float64(child, ["columns", field])
    ok = np.ones(len(n_rows), dtype=bool)
    ok[list(issues.found)] = False
    src = np.flatnonzero(np.repeat(ok, n_rows))  # value rows of the series still accepted …
    dst = np.flatnonzero(np.repeat(ok, n_obs))  # … and the timestamp rows they belong to (as many)
    out[dst] = flat[(starts[src][:, None] + np.arange(d)).reshape(-1)].reshape(-1, d)
    issues.at_elements(
        np.flatnonzero(np.isinf(out).any(axis=1)),
        offsets(n_obs),
        field,
        lambda k: "must be finite (null or NaN = not observed)",
    )
    return out


def answer_bytes(job: Job) -> int:
    """An upper bound on the size of `encode`'s answer, known before solving: one row per query time ×
    channel holding its series' id, the time (8 bytes), the channel's name, 8 bytes per mean and
    quantile (float32) and 4 per sample, plus 4-byte offsets for the strings; and the errors and
    warnings in the schema metadata."""
    d = job.model.n_channels
    n_q = np.diff(job.packed.query_offsets)
    ids = int(sum(len(i.encode()) * int(k) for i, k in zip(job.packed.ids, n_q, strict=True))) * d
    names = sum(len(c.encode()) for c in job.model.channels) * int(n_q.sum())
    rows = int(n_q.sum()) * d
    per_row = 8 + 4 + 4 * len(job.levels) + 4 * job.num_samples + 4 + 8
    return ids + names + rows * per_row + job.notes_bytes() + 65536


def encode(job: Job, out: Outcome) -> memoryview:
    """Forecasts → an Arrow IPC stream of the long table (series × query time × channel); the refused
    series and the warnings go in the schema metadata as JSON lists of error items."""
    fc = out.fc
    d = len(job.model.channels)
    series, query, channel = long_layout(fc.query_offsets, d)
    cols: dict[str, pa.Array] = {
        "id": pa.array(fc.ids, pa.string()).take(pa.array(series)),
        "time": out.echo.as_array().take(pa.array(query)),
        "channel": pa.array(job.model.channels, pa.string()).take(pa.array(channel)),
        "point": pa.array(fc.point.reshape(-1)),  # float32, the model's precision
        "mean": pa.array(fc.mean.reshape(-1)),
    }
    where = {lv: j for j, lv in enumerate(fc.levels)}
    for lv in job.levels:
        cols[quantile_column(lv)] = pa.array(fc.quantiles[where[lv]].reshape(-1))
    if job.num_samples and fc.samples is not None:
        s = fc.samples[: job.num_samples]  # (S, M, D) → one list of S per output row
        flat = np.ascontiguousarray(s.transpose(1, 2, 0)).reshape(-1)
        cols["samples"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), job.num_samples)
    cols["nfe"] = pa.array(fc.nfe.astype(np.float32)[series])  # of the row's series, per trajectory
    meta = {
        "latentcast.model": job.model.name,
        "latentcast.version": job.model.version,
        "latentcast.solver": json.dumps(job.solver_used.used()),
        "latentcast.warnings": json.dumps([w for ws in out.warnings for w in ws]),
        "latentcast.errors": json.dumps(out.errors),
    }
    table = pa.table(cols).replace_schema_metadata(meta)
    mock = pa.MockOutputStream()  # sizes the stream without writing it: one exact allocation below
    with pa.ipc.new_stream(mock, table.schema) as writer:
        writer.write_table(table)
    buf = pa.allocate_buffer(mock.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buf), table.schema) as writer:
        writer.write_table(table)
    return memoryview(buf)  # the stream's buffer itself: no copy into bytes
