"""Arrow IPC bodies: `decode` (bytes + query parameters → Job) and `encode` (Job + forecast → bytes).

A columnar body for bulk requests: read and written without touching each number in Python. The
request and response layouts are in `latentcast.arrowio` (the client writes what this reads). Errors
are JSON, as for every request, with the same locations and messages as the JSON format.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latentcast.arrowio import COLUMNS, MEDIA_TYPE
from latentcast.frames import locate, long_layout, offsets, quantile_column
from latentcast.models import PackedForecast
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError, field_error
from latentcast.service.formats.ipc_limits import IpcLimitError, read_limited
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
from latentcast.times import to_unit

__all__ = ["MEDIA_TYPE", "answer_bytes", "decode", "encode"]
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def decode(body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job:
    """An Arrow request → Job, with the same checks and messages as the JSON format."""
    name, levels, num_samples = _options(params)
    table = _read_table(body, settings)
    model = lookup(name)
    solver = solver_for(
        model, params.get("solver") or None, _tolerance(params, "rtol"), _tolerance(params, "atol"), settings, ["query"]
    )
    return dataclasses.replace(_job(table, levels, num_samples, model, settings), solver=solver)


def _tolerance(params: Mapping[str, str], name: str) -> float | None:
    if name not in params:
        return None
    try:
        value = float(params[name])
    except ValueError:
        raise field_error(422, "must be a number, e.g. 1e-5", ["query", name]) from None
    if not 0 < value < 1:
        raise field_error(422, f"{value:g} is not in (0, 1)", ["query", name])
    return value


def _read_table(body: bytes, settings: Settings) -> pa.Table:
    """An Arrow IPC stream → table: 400 when it is not a valid one, 413 when its headers say it holds more
    rows or (decompressed) bytes than allowed, before anything is decompressed."""
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
    missing = [c for c in COLUMNS if c not in table.column_names]
    unknown = [c for c in table.column_names if c not in COLUMNS]
    if missing or unknown:
        col = (missing or unknown)[0]
        what = "missing column" if missing else "unknown column"
        raise field_error(422, f"{what}; the table needs exactly the columns {', '.join(COLUMNS)}", ["columns", col])
    return table


def _options(params: Mapping[str, str]) -> tuple[str | None, tuple[float, ...], int]:
    """model, quantile levels and num_samples from the query string (the JSON body's other fields)."""
    unknown = sorted(set(params) - {"model", "quantiles", "num_samples", "solver", "rtol", "atol"})
    if unknown:
        raise field_error(
            422, "unknown parameter; use model, quantiles, num_samples, solver, rtol, atol", ["query", unknown[0]]
        )
    levels: tuple[float, ...] = (0.1, 0.5, 0.9)
    if "quantiles" in params:
        try:
            levels = tuple(float(x) for x in params["quantiles"].split(",") if x.strip())
        except ValueError:
            raise field_error(
                422, "must be comma-separated numbers, e.g. 0.1,0.5,0.9", ["query", "quantiles"]
            ) from None
    try:
        num_samples = int(params.get("num_samples", "0"))
    except ValueError:
        raise field_error(422, "must be a whole number", ["query", "num_samples"]) from None
    if num_samples < 0:
        raise field_error(422, "must be ≥ 0", ["query", "num_samples"])
    return params.get("model") or None, levels, num_samples


def _float64(arr: pa.Array, loc: list[str | int]) -> np.ndarray:
    """Numbers → float64, NaN for nulls; integers that float64 cannot hold exactly (|x| > 2^53) are a 422."""
    try:
        return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except pa.ArrowInvalid:
        raise field_error(422, "integers must lie within ±2^53 (float64's exact range); send doubles", loc) from None


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _first_null(arr: pa.Array) -> int | None:
    if arr.null_count == 0:
        return None
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def _lists(table: pa.Table, name: str, ids: list[str]) -> tuple[pa.Array, np.ndarray]:
    """A list column → (its flat elements, elements per series); nulls and empty lists are errors."""
    col = _column(table, name)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise field_error(422, f"column must be a list per series, not {col.type}", ["columns", name])
    i = _first_null(col)
    if i is not None:
        raise field_error(422, "must not be null", ["series", i, name], ids[i])
    counts = col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    return col.flatten(), counts


def _times(flat: pa.Array, offs: np.ndarray, name: str, ids: list[str], model: ModelSpec) -> tuple[str, np.ndarray]:
    """Flat times → ("number" | "datetime", float64 in the model's time unit)."""
    k = _first_null(flat)
    if k is not None:
        i, j = locate(offs, k)
        raise field_error(422, "must not be null", ["series", i, name, j], ids[i])
    t = flat.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number", _float64(flat, ["columns", name])
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if model.time.unit == "unitless":
            raise field_error(422, "this model takes numeric times, not date-times", ["columns", name])
        unit = t.unit if pa.types.is_timestamp(t) else "ms"
        if pa.types.is_date(t):
            flat = pc.cast(flat, pa.timestamp("ms"))
        raw = pc.cast(flat, pa.int64()).to_numpy()  # since the epoch, UTC (naive times are taken as UTC)
        return "datetime", to_unit(raw.astype(np.float64) / _PER_SECOND[unit], model.time.unit)
    raise field_error(422, f"must hold numbers (the model's time unit) or timestamps, not {t}", ["columns", name])


def _job(table: pa.Table, levels: tuple[float, ...], num_samples: int, model: ModelSpec, settings: Settings) -> Job:
    b, d = table.num_rows, model.n_channels
    if b == 0:
        raise field_error(422, "the table has no rows; send one row per series", ["series"])
    id_col = _column(table, "id")
    if not (pa.types.is_string(id_col.type) or pa.types.is_large_string(id_col.type)):
        raise field_error(422, f"column must be strings, not {id_col.type}", ["columns", "id"])
    i = _first_null(id_col)
    if i is not None:
        raise field_error(422, "must not be null", ["series", i, "id"])
    ids: list[str] = id_col.to_pylist()
    lengths = pc.utf8_length(id_col).to_numpy()
    bad = np.flatnonzero((lengths < 1) | (lengths > 256))
    if bad.size:
        i = int(bad[0])
        raise field_error(422, "must have 1 to 256 characters", ["series", i, "id"], ids[i])
    flat_t, n_obs = _lists(table, "timestamps", ids)
    flat_q, n_q = _lists(table, "query_times", ids)
    check_options(b, int(n_obs.sum() + n_q.sum()), int(n_q.sum()), d, levels, num_samples, settings)
    for counts, name in ((n_obs, "timestamps"), (n_q, "query_times")):
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            i = int(empty[0])
            raise field_error(422, "must hold at least one time", ["series", i, name], ids[i])
    check_series(ids, n_obs, n_q, settings)
    off_t, off_q = offsets(n_obs), offsets(n_q)
    kind, ts = _times(flat_t, off_t, "timestamps", ids, model)
    qkind, tq = _times(flat_q, off_q, "query_times", ids, model)
    if qkind != kind:
        raise field_error(422, f"must be of the same kind as timestamps ({kind}s)", ["columns", "query_times"])
    values = _values(table, ids, n_obs, off_t, d, model.name)

    def show(field: str, i: int, j: int) -> str:
        flat, offs = (flat_t, off_t) if field == "timestamps" else (flat_q, off_q)
        v = flat[int(offs[i]) + j].as_py()
        return repr(v) if isinstance(v, int | float) else repr(str(v))

    return Job(
        model=model,
        packed=packed(ids, ts, n_obs, values, tq, n_q, model, show),
        echo=Echo(off_q, array=flat_q),
        levels=levels,
        num_samples=num_samples,
    )


def _values(table: pa.Table, ids: list[str], n_obs: np.ndarray, offs: np.ndarray, d: int, name: str) -> np.ndarray:
    """The values column → (N, D) float64, NaN where not observed."""
    rows, n_rows = _lists(table, "values", ids)
    bad = np.flatnonzero(n_rows != n_obs)
    if bad.size:
        i = int(bad[0])
        raise field_error(422, f"has {n_rows[i]} rows for {n_obs[i]} timestamps", ["series", i, "values"], ids[i])
    if pa.types.is_fixed_size_list(rows.type):
        widths = np.full(len(rows), rows.type.list_size)
    elif pa.types.is_list(rows.type) or pa.types.is_large_list(rows.type):
        widths = rows.value_lengths().to_numpy(zero_copy_only=False)
    else:
        raise field_error(
            422, f"column must be a list of rows (lists) per series, not {rows.type}", ["columns", "values"]
        )
    k = _first_null(rows)
    if k is not None:
        i, j = locate(offs, k)
        raise field_error(
            422, "row must not be null (null values inside it mean not observed)", ["series", i, "values", j], ids[i]
        )
    bad = np.flatnonzero(widths != d)
    if bad.size:
        i, j = locate(offs, int(bad[0]))
        raise field_error(
            422,
            f"row has {widths[bad[0]]} values; model {name!r} has {d} channels (GET /models lists them)",
            ["series", i, "values", j],
            ids[i],
        )
    elems = rows.flatten()
    t = elems.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
        raise field_error(422, f"values must be numbers, not {t}", ["columns", "values"])
    values = _float64(elems, ["columns", "values"]).reshape(-1, d)
    inf = np.flatnonzero(np.isinf(values).any(axis=1))
    if inf.size:
        i, j = locate(offs, int(inf[0]))
        raise field_error(422, "must be finite (null or NaN = not observed)", ["series", i, "values", j], ids[i])
    return values


def answer_bytes(job: Job) -> int:
    """An upper bound on the size of `encode`'s answer, known before solving: one row per query time ×
    channel holding its series' id, the time (8 bytes), the channel's name, 8 bytes per mean and
    quantile (float32) and 4 per sample, plus 4-byte offsets for the strings."""
    d = job.model.n_channels
    n_q = np.diff(job.packed.query_offsets)
    ids = int(sum(len(i.encode()) * int(k) for i, k in zip(job.packed.ids, n_q, strict=True))) * d
    names = sum(len(c.encode()) for c in job.model.channels) * int(n_q.sum())
    rows = int(n_q.sum()) * d
    return ids + names + rows * (8 + 4 + 4 * len(job.levels) + 4 * job.num_samples + 4 + 8) + 65536


def encode(job: Job, fc: PackedForecast) -> memoryview:
    """Forecasts → an Arrow IPC stream of the long table (series × query time × channel)."""
    d = fc.mean.shape[1]
    series, query, channel = long_layout(fc.query_offsets, d)
    cols: dict[str, pa.Array] = {
        "id": pa.array(fc.ids, pa.string()).take(pa.array(series)),
        "time": job.echo.as_array().take(pa.array(query)),
        "channel": pa.array(job.model.channels, pa.string()).take(pa.array(channel)),
        "mean": pa.array(fc.mean.reshape(-1)),  # float32, the model's precision
    }
    nfe = fc.nfe
    where = {lv: j for j, lv in enumerate(fc.levels)}
    for lv in job.levels:
        cols[quantile_column(lv)] = pa.array(fc.quantiles[where[lv]].reshape(-1))
    if job.num_samples and fc.samples is not None:
        s = fc.samples[: job.num_samples]  # (S, M, D) → one list of S per output row
        flat = np.ascontiguousarray(s.transpose(1, 2, 0)).reshape(-1)
        cols["samples"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), job.num_samples)
    cols["nfe"] = pa.array(nfe.astype(np.float32)[series])  # of the row's series, per trajectory
    meta = {
        "latentcast.model": job.model.name,
        "latentcast.version": job.model.version,
        "latentcast.solver": json.dumps(job.solver_used.used()),
    }
    table = pa.table(cols).replace_schema_metadata(meta)
    mock = pa.MockOutputStream()  # sizes the stream without writing it: one exact allocation below
    with pa.ipc.new_stream(mock, table.schema) as writer:
        writer.write_table(table)
    buf = pa.allocate_buffer(mock.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buf), table.schema) as writer:
        writer.write_table(table)
    return memoryview(buf)  # the stream's buffer itself: no copy into bytes
