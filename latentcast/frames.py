"""Long tables ↔ flat arrays: the one converter behind the in-process API, the HTTP client and the
server's long-table answers. No torch here.

In: a long table, one row per (series, time): a column `id`, a column `time` (numbers in the model's
time unit, or date-times) and one column per channel, empty/NaN where not observed. Out: the long
table of forecasts, one row per series × query time × channel: id, time, channel, mean, q<level>….

Shapes: B series; N observations in all, series i owning rows offsets[i]:offsets[i + 1]; M query
times in all, likewise by query_offsets; D channels.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from latentcast.times import TimeParseError, from_seconds, is_numeric, parse_datetimes

# query_times: one list for every series, a mapping id → list, or a table with columns id, time
QueryTimes: TypeAlias = Sequence[Any] | Mapping[Any, Sequence[Any]] | pd.DataFrame


class DataError(ValueError):
    """The data cannot be used as given; the message names the column, series or value to fix."""


def read_long_table(path: str | Path, id_col: str = "id") -> pd.DataFrame:
    """Read a CSV (optionally .gz) or parquet long table. Ids are read as text (patients 1 and 01 stay
    two patients); a header that names a column twice, or a table with no rows, is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        _unique_header(path, names)
        frame = pd.read_parquet(path)
        if id_col in frame.columns and not frame.empty:
            frame[id_col] = frame[id_col].map(_id_text)
    elif name.endswith((".csv", ".csv.gz")):
        try:  # the header as written: pandas would rename a second 'bili' to 'bili.1'
            names = [str(c) for c in pd.read_csv(path, nrows=1, header=None).iloc[0].tolist()]
            _unique_header(path, names)
            # ids as text, "NA" and "null" included (a country code, a name); only an empty cell has no id
            na = {c: _NA_TEXT for c in names if c != id_col} | {id_col: [""]}
            frame = pd.read_csv(path, dtype={id_col: str}, keep_default_na=False, na_values=na)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: the file is empty; a long table needs a header (id, time, channels)") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    else:
        raise DataError(f"{path}: expected .csv, .csv.gz or .parquet")
    if frame.empty:
        raise DataError(f"{path}: the table has a header but no rows; add one row per (series, time)")
    return frame


# what pandas reads as missing by default, kept for every column but the id
_NA_TEXT = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip


def _id_text(v: Any) -> Any:
    """A parquet id as text: bytes decoded, numbers written out, a null left null."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return None if pd.isna(v) else str(v)


def _unique_header(path: Path, names: Sequence[str]) -> None:
    twice = sorted({c for c in names if list(names).count(c) > 1})
    if twice:
        raise DataError(f"{path}: the header names column {twice[0]!r} more than once; rename or drop the copies")


def offsets(counts: np.ndarray | Sequence[int]) -> np.ndarray:
    """Counts per series (B,) → offsets (B + 1,): series i owns flat elements offsets[i]:offsets[i + 1]."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def locate(offs: np.ndarray, k: int) -> tuple[int, int]:
    """Flat index k → (series, position within the series), for error messages."""
    i = int(np.searchsorted(offs, k, side="right")) - 1
    return i, k - int(offs[i])


@dataclasses.dataclass(frozen=True)
class Times:
    """(N,) float64: numbers as given, or seconds since the Unix epoch for date-times."""

    values: np.ndarray
    is_datetime: bool

    def as_column(self) -> pd.Series:
        """As the user sees them: numbers, or UTC timestamps."""
        return from_seconds(self.values) if self.is_datetime else pd.Series(self.values)


def parse_times(values: Sequence[Any] | pd.Series, what: str) -> Times:
    """A column of numbers or date-times → `Times`; DataError naming `what` and the bad element."""
    col = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{what}: booleans are not times")
    if is_numeric(col):
        out = col.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:
            raise DataError(f"{what}: {int(bad.size)} missing or non-finite times (first at row {int(bad[0])})")
        return Times(out, is_datetime=False)
    if col.dtype == object and col.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool)).all():
        return parse_times(col.astype(np.float64), what)
    try:
        return Times(parse_datetimes(col), is_datetime=True)
    except TimeParseError as exc:
        raise DataError(f"{what}: row {exc.index}: {exc.value!r} is {exc.reason}") from None


@dataclasses.dataclass(frozen=True)
class FlatTable:
    """A long table as flat arrays, series in order of their ids, each series' rows in time order.

    keys: the B ids as they were in the table; ids: the same as strings (on the wire); times (N,);
    values (N, D) float64, NaN = not observed; offsets (B + 1,).
    """

    keys: list[Any]
    ids: list[str]
    times: Times
    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray, n_columns: int | None = None) -> FlatTable:
        """The rows marked in `rows` (N,) bool, and the first `n_columns` columns (all: None); every series
        kept, its offsets recounted."""
        counts = np.add.reduceat(rows.astype(np.int64), self.offsets[:-1]) if len(self) else np.zeros(0, np.int64)
        values = self.values[rows] if n_columns is None else self.values[rows, :n_columns]
        times = Times(self.times.values[rows], self.times.is_datetime)
        return dataclasses.replace(self, times=times, values=values, offsets=offsets(counts))


def from_frame(
    frame: pd.DataFrame,
    channels: Sequence[str],
    id_col: str = "id",
    time_col: str = "time",
    extra_columns: str = "ignore",
) -> FlatTable:
    """A long table → `FlatTable` over `channels` (a channel missing from the table is all NaN; at
    least one must be present). Rows with nothing observed are kept; the caller decides. extra_columns:
    "error" refuses a column that is neither id, time nor a channel (a misspelt channel would
    otherwise be dropped without a word), "ignore" drops it."""
    if len(frame) == 0:
        raise DataError("the table has no rows; add one row per (series, time)")
    twice = sorted({str(c) for c in frame.columns if list(frame.columns).count(c) > 1})
    if twice:
        raise DataError(f"the table has column {twice[0]!r} more than once; rename or drop the copies")
    missing = [c for c in (id_col, time_col) if c not in frame.columns]
    if missing:
        raise DataError(f"columns {missing} not in the table (it has {list(frame.columns)})")
    extra = [str(c) for c in frame.columns if c not in (id_col, time_col, *channels)]
    if extra and extra_columns == "error":
        raise DataError(
            f"columns {extra} are not channels of the model (its channels: {', '.join(channels)}); rename them to "
            "a channel, or drop them (extra_columns='ignore' in Python, --extra-columns ignore in the CLI)"
        )
    present = [c for c in channels if c in frame.columns]
    if not present:
        raise DataError(
            f"none of the channels {list(channels)} is a column of the table (it has {list(frame.columns)})"
        )
    non_numeric = [c for c in present if not is_numeric(frame[c]) and not frame[c].isna().all()]
    if non_numeric:
        raise DataError(
            f"columns {non_numeric} are not numeric: channels and input columns (events, levels, static) hold "
            "numbers; encode a category as numbers (e.g. sex as 0/1)"
        )
    times = parse_times(frame[time_col], f"column {time_col!r}")
    codes, keys = pd.factorize(frame[id_col], sort=True)
    if (codes < 0).any():
        raise DataError(f"column {id_col!r}: {int((codes < 0).sum())} rows have no id")
    ids = [str(k) for k in keys]
    if len(set(ids)) != len(ids):
        raise DataError(f"column {id_col!r}: two ids read the same as text; make them distinct")
    order = np.lexsort((times.values, codes))
    values = frame.reindex(columns=list(channels)).to_numpy(dtype=np.float64)[order]
    if np.isinf(values).any():
        col = list(channels)[int(np.nonzero(np.isinf(values))[1][0])]
        raise DataError(f"column {col!r} contains inf; use an empty cell for 'not observed'")
    codes, at, values = _merge_agreeing(codes[order], times.values[order], values)
    return FlatTable(
        keys=list(keys),
        ids=ids,
        times=Times(at, times.is_datetime),
        values=values,
        offsets=offsets(np.bincount(codes, minlength=len(keys))),
    )


@dataclasses.dataclass(frozen=True)
class TableInputs:
    """The input columns of a `FlatTable` whose columns are D channels, then E event kinds, then S static
    covariates: `observed` (N,) rows that observe a channel; events (K,) flat row indices of the rows
    carrying an event value, `event_offsets` (B + 1,) per series; static (B, S), NaN = not given."""

    observed: np.ndarray
    events: np.ndarray
    event_offsets: np.ndarray
    static: np.ndarray


def table_inputs(table: FlatTable, n_channels: int, n_events: int, static_names: Sequence[str]) -> TableInputs:
    """Split a table's rows into observations and events, and read each series' one value per static
    column (two different values in one series are a DataError naming it)."""
    d, e = n_channels, n_events
    values = table.values
    observed = ~np.isnan(values[:, :d]).all(axis=1)
    has_event = ~np.isnan(values[:, d : d + e]).all(axis=1) if e else np.zeros(len(values), dtype=bool)
    cols = values[:, d + e :]
    starts = table.offsets[:-1]
    lo = np.fmin.reduceat(cols, starts, axis=0) if len(table) else cols[:0]  # (B, S), NaN: never given
    hi = np.fmax.reduceat(cols, starts, axis=0) if len(table) else cols[:0]
    clash = [
        f"series {table.ids[i]!r} column {static_names[j]!r} ({lo[i, j]:g} and {hi[i, j]:g})"
        for i, j in zip(*np.nonzero(lo < hi), strict=True)
    ]
    static = lo
    if clash:
        raise DataError(
            f"a static covariate takes one value per series; {len(clash)} differ within a series, e.g. "
            f"{'; '.join(clash[:3])}: give one value (e.g. the baseline), or model it as a channel"
        )
    events = np.flatnonzero(has_event)
    counts = np.add.reduceat(has_event.astype(np.int64), table.offsets[:-1]) if len(table) else np.zeros(0, int)
    return TableInputs(observed, events, offsets(counts), static)


def _merge_agreeing(
    codes: np.ndarray, times: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted rows of one series at one time → one row where they agree (a repeated row, or channels
    reported in separate rows): each channel's value, NaN where none. Rows that give a channel two
    values stay as they are, for the caller to refuse."""
    same = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1])
    if not same.any():
        return codes, times, values
    starts = np.flatnonzero(np.r_[True, ~same])
    keep: list[int] = []
    merged: list[np.ndarray] = []
    for a, z in zip(starts.tolist(), np.r_[starts[1:], len(codes)].tolist(), strict=True):
        block = values[a:z]
        lo, hi = np.nanmin(block, axis=0, initial=np.inf), np.nanmax(block, axis=0, initial=-np.inf)
        if z - a == 1 or (lo < hi).any():
            keep.extend(range(a, z))
            merged.extend(block)
        else:
            keep.append(a)
            merged.append(np.where(np.isfinite(lo), lo, np.nan))
    idx = np.asarray(keep)
    return codes[idx], times[idx], np.asarray(merged, dtype=values.dtype).reshape(len(idx), values.shape[1])


def query_table(
    table: FlatTable, query_times: QueryTimes, id_col: str = "id", time_col: str = "time"
) -> tuple[Times, np.ndarray]:
    """Query times per series of `table`: (M,) times and query offsets (B + 1,). `query_times` is one
    list for every series, a mapping id → list, or a table with columns id_col, time_col."""
    if isinstance(query_times, pd.DataFrame):
        if id_col not in query_times.columns or time_col not in query_times.columns:
            raise DataError(f"query_times: a table needs columns {id_col!r} and {time_col!r}")
        groups = {str(k): g[time_col].tolist() for k, g in query_times.groupby(query_times[id_col].astype(str))}
        per = [groups.get(sid, []) for sid in table.ids]
        _unknown_ids(groups, table)
    elif isinstance(query_times, Mapping):
        by_str = {str(k): v for k, v in query_times.items()}
        per = [list(by_str.get(sid, [])) for sid in table.ids]
        _unknown_ids(by_str, table)
    elif isinstance(query_times, str) or not isinstance(query_times, Sequence | np.ndarray | pd.Series | pd.Index):
        raise DataError("query_times: give a list of times, a mapping id → list, or a table with id and time")
    else:
        per = [list(query_times)] * len(table)
    counts = np.fromiter(map(len, per), dtype=np.int64, count=len(per))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise DataError(f"query_times: series {table.keys[int(empty[0])]!r} has no query time")
    flat = pd.Series([t for q in per for t in q], dtype=object)
    if len(flat) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        flat = flat.astype(np.float64)
    times = parse_times(flat, "query_times")
    if times.is_datetime != table.times.is_datetime:
        kind = "date-times" if table.times.is_datetime else "numbers"
        raise DataError(f"query_times: must be {kind}, like the table's time column")
    return times, offsets(counts)


def _unknown_ids(queried: Mapping[str, Any], table: FlatTable) -> None:
    """Query times for ids the table does not have are not forecast: say so (a typo, or 7 for 007)."""
    unknown = sorted(set(queried) - set(table.ids))
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        warnings.warn(LatentcastWarning(f"query_times: ids not in the table, not forecast: {shown}"), stacklevel=4)


def long_layout(query_offsets: np.ndarray, n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the long answer, series × query time × channel in order: for every row its series
    (M·D,), its query time (M·D,) and its channel (M·D,)."""
    m = int(query_offsets[-1])
    counts = np.diff(query_offsets)
    dtype = np.int32 if m * n_channels < 2**31 else np.int64  # half the memory for any real answer
    query = np.repeat(np.arange(m, dtype=dtype), n_channels)
    series = np.repeat(np.arange(len(counts), dtype=dtype), counts)[query]
    channel = np.tile(np.arange(n_channels, dtype=dtype), m)
    return series, query, channel


def quantile_column(level: float) -> str:
    """The column of a quantile level: q and its shortest exact form (0.1 → q0.1; 0.1000001 stays apart)."""
    return f"q{level!r}"


def to_frame(
    keys: Sequence[Any],
    query_offsets: np.ndarray,
    times: Times,
    channels: Sequence[str],
    point: np.ndarray,
    mean: np.ndarray,
    quantiles: np.ndarray,
    levels: Sequence[float],
    id_col: str = "id",
    time_col: str = "time",
) -> pd.DataFrame:
    """Flat forecasts → the long table. times (M,); point, mean (M, D); quantiles (len(levels), M, D)."""
    series, query, channel = long_layout(query_offsets, len(channels))
    cols: dict[str, Any] = {
        id_col: np.asarray(keys, dtype=object)[series] if len(keys) else np.zeros(0, dtype=object),
        time_col: times.as_column().to_numpy()[query],
        "channel": np.asarray(channels, dtype=object)[channel],
        "point": point.reshape(-1).astype(np.float64),
        "mean": mean.reshape(-1).astype(np.float64),
    }
    for j, lv in enumerate(levels):
        cols[quantile_column(lv)] = quantiles[j].reshape(-1).astype(np.float64)
    out = pd.DataFrame(cols)
    if times.is_datetime:
        out[time_col] = pd.to_datetime(out[time_col], utc=True)
    return out


def note_solver(frame: pd.DataFrame, solver: dict[str, Any], keys: Sequence[Any], nfe: np.ndarray) -> pd.DataFrame:
    """Record on a forecast table what its solves used and cost: `frame.attrs["solver"]` (method, rtol,
    atol, max_num_steps) and `frame.attrs["nfe"]` (series id → vector-field evaluations per trajectory)."""
    frame.attrs["solver"] = dict(solver)
    frame.attrs["nfe"] = {k: float(n) for k, n in zip(keys, nfe, strict=True)}
    return frame


class LatentcastWarning(UserWarning):
    """Something unusual about the input or the answer; the answer's `attrs["warnings"]` has each."""


def note_outcome(frame: pd.DataFrame, errors: list[dict[str, Any]], notes: list[dict[str, Any]]) -> pd.DataFrame:
    """Record on a forecast table the refused series (`attrs["errors"]`) and the warnings
    (`attrs["warnings"]`), and raise the first warnings as `LatentcastWarning`s (the rest counted)."""
    frame.attrs["errors"] = errors
    frame.attrs["warnings"] = notes
    for note in notes[:SHOWN_WARNINGS]:
        where = f"series {note['id']!r}: " if note.get("id") is not None else ""
        warnings.warn(LatentcastWarning(f"{where}{note['msg']}"), stacklevel=3)
    if len(notes) > SHOWN_WARNINGS:
        more = f"{len(notes) - SHOWN_WARNINGS} more warnings: .attrs['warnings'] has each"
        warnings.warn(LatentcastWarning(more), stacklevel=3)
    return frame


SHOWN_WARNINGS = 5
