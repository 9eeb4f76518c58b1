"""Arrow IPC on the wire: the request table's layout and the stream helpers the client and the server
share. No torch here.

Request (`Content-Type: application/vnd.apache.arrow.stream`): one row per series, the JSON body's
fields as columns:
    id           string
    timestamps   list<double | integer>  (model time unit)  or  list<timestamp | date>
    values       list<list<double>> or list<fixed_size_list<double, D>>: one row per timestamp, the
                 model's channels in order; null or NaN = not observed
    query_times  list of the same kind as timestamps
and, for a model with inputs (GET /models: events, static), optionally:
    event_times  list of the same kind as timestamps: each event's time, past or planned
    event_values list<list<double>> or list<fixed_size_list<double, E>>: one row per event time, the
                 model's event kinds in order; null or NaN = none of that kind
    static       list<double> (S per series, the model's order; null = unknown)
Options go in the query string: `?model=pbcseq&quantiles=0.1,0.5,0.9&num_samples=0`.

Response: one row per series × query time × channel, in the order asked: id, time (as sent), channel,
mean, one column per quantile (q0.1, …), and `samples` (fixed_size_list<float, num_samples>) when
asked; the schema metadata names the model and its version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from latentcast.frames import offsets
from latentcast.times import parse_datetimes

MEDIA_TYPE = "application/vnd.apache.arrow.stream"
COLUMNS = ("id", "timestamps", "values", "query_times")
INPUT_COLUMNS = ("event_times", "event_values", "static")


def write_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def read_stream(body: bytes) -> pa.Table:
    """An Arrow IPC stream → its table (raises pyarrow's errors for anything else)."""
    with pa.ipc.open_stream(pa.py_buffer(body)) as reader:
        return reader.read_all()


def time_array(times: np.ndarray, is_datetime: bool) -> pa.Array:
    """(N,) float64 numbers, or seconds since the epoch → UTC microsecond timestamps."""
    if is_datetime:
        micros = np.round(np.asarray(times, dtype=np.float64) * 1e6).astype(np.int64)
        return pa.array(micros, pa.timestamp("us", tz="UTC"))
    return pa.array(np.asarray(times, dtype=np.float64))


def encode_request(
    ids: list[str],
    times: pa.Array | np.ndarray,
    offs: np.ndarray,
    values: np.ndarray,
    queries: pa.Array | np.ndarray,
    query_offsets: np.ndarray,
    inputs: tuple[pa.Array | np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """Flat arrays → a request body. times (N,) and queries (M,): numbers, datetime64 or Arrow
    timestamps; values (N, D) with NaN = not observed; offsets (B + 1,) per array. inputs: event times
    (K,) of the timestamps' kind, their offsets (B + 1,), event values (K, E), static values (B, S)."""
    off = pa.array(np.asarray(offs, dtype=np.int32))
    columns = {
        "id": pa.array(ids, pa.string()),
        "timestamps": pa.ListArray.from_arrays(off, pa.array(times)),
        "values": pa.ListArray.from_arrays(off, _rows(values)),
        "query_times": pa.ListArray.from_arrays(pa.array(np.asarray(query_offsets, dtype=np.int32)), pa.array(queries)),
    }
    if inputs is not None:
        ev_t, ev_off, ev_v, static = inputs
        ev_off_arr = pa.array(np.asarray(ev_off, dtype=np.int32))
        columns["event_times"] = pa.ListArray.from_arrays(ev_off_arr, pa.array(ev_t))
        columns["event_values"] = pa.ListArray.from_arrays(ev_off_arr, _rows(ev_v))
        st_off = pa.array(np.arange(len(ids) + 1, dtype=np.int32) * static.shape[1])
        flat = np.ascontiguousarray(static, dtype=np.float64).reshape(-1)
        columns["static"] = pa.ListArray.from_arrays(st_off, pa.array(flat, from_pandas=True))
    return write_stream(pa.table(columns))


def _rows(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, W) → N fixed-size lists of W doubles (NaN stays NaN: not observed)."""
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float64).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def encode_series(series: list[dict[str, Any]]) -> bytes:
    """JSON-shaped series (id, timestamps, values with None, query_times) → an Arrow request body.
    ISO-8601 strings become UTC timestamps."""

    def flat_times(field: str) -> pa.Array:
        flat = [t for s in series for t in s[field]]
        if any(isinstance(t, str) for t in flat):
            return time_array(parse_datetimes(flat), is_datetime=True)
        return time_array(np.asarray(flat, dtype=np.float64), is_datetime=False)

    values = np.array(
        [[np.nan if v is None else v for v in row] for s in series for row in s["values"]], dtype=np.float64
    )
    return encode_request(
        [s["id"] for s in series],
        flat_times("timestamps"),
        offsets([len(s["timestamps"]) for s in series]),
        values,
        flat_times("query_times"),
        offsets([len(s["query_times"]) for s in series]),
    )
