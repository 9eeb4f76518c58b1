"""Ragged batches as flat arrays: many series, each with its own observation and query times.

A bulk request of 1,000 series spent more time in per-series Python (padding, slicing, one object per
series) than the GPU spent on the model. Here a batch is a handful of flat arrays plus offsets, and
padding to (B, T) happens in one scatter; the results come back flat over all query times.

Shapes: B series; N observations in all, series i owning rows offsets[i]:offsets[i + 1]; M query
times in all, series i owning query_offsets[i]:query_offsets[i + 1]; D channels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from latentcast.frames import locate, offsets
from latentcast.models.data import Batch, Normalizer, Series, TimeSpec, pad, rows_cols

_F32 = float(np.finfo(np.float32).max)
# show(field, i, j): element j of series i's field as the client sent it, for messages
Show = Callable[[str, int, int], str]


class FieldError(ValueError):
    """One series' field is invalid: element `index` of `field` of series `series` (index None: the
    field as a whole). `limit`: which configured limit was exceeded, "max_horizon" or "max_sigmas"
    (callers name their own setting for it), or None."""

    def __init__(self, series: int, field: str, index: int | None, msg: str, limit: str | None = None):
        super().__init__(msg)
        self.series = series
        self.field = field
        self.index = index
        self.msg = msg
        self.limit = limit


@dataclasses.dataclass(frozen=True)
class PackedSeries:
    """B series and their query times, flat.

    ids: B names. times (N,) float64 absolute model time, strictly increasing within a series.
    values (N, D) float32 raw units, NaN = not observed (every row has an observed value).
    offsets (B + 1,) int64. queries (M,) float64 absolute model time, any order, ≥ 1 per series.
    query_offsets (B + 1,) int64.
    """

    ids: list[str]
    times: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    queries: np.ndarray
    query_offsets: np.ndarray

    def __post_init__(self) -> None:
        b = len(self.ids)
        if self.offsets.shape != (b + 1,) or self.query_offsets.shape != (b + 1,):
            raise ValueError(f"PackedSeries: need {b + 1} offsets for {b} series")
        if b and (np.diff(self.offsets).min() < 1 or np.diff(self.query_offsets).min() < 1):
            raise ValueError("PackedSeries: every series needs at least one observation and one query time")
        if len(self.times) != self.offsets[-1] or len(self.values) != len(self.times):
            raise ValueError("PackedSeries: times, values and offsets disagree")
        if len(self.queries) != self.query_offsets[-1]:
            raise ValueError("PackedSeries: queries and query_offsets disagree")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_series(
        cls, series: Sequence[Series], queries: Sequence[np.ndarray], n_context: Sequence[int] | None = None
    ) -> PackedSeries:
        """Pack `Series` objects; with n_context, only each series' first n_context[i] points."""
        if len(queries) != len(series):
            raise ValueError("need one array of query times per series")
        if min((len(q) for q in queries), default=1) == 0:
            raise ValueError("every series needs at least one query time")
        ctx = [len(s) for s in series] if n_context is None else list(n_context)
        for s, c in zip(series, ctx, strict=True):
            if not 1 <= c <= len(s):
                raise ValueError(f"series {s.id!r}: context length {c} outside [1, {len(s)}]")
        d = series[0].values.shape[1] if series else 0
        return cls(
            ids=[s.id for s in series],
            times=np.concatenate([s.times[:c] for s, c in zip(series, ctx, strict=True)]) if series else np.zeros(0),
            values=(
                np.concatenate([s.values[:c] for s, c in zip(series, ctx, strict=True)]).astype(np.float32, copy=False)
                if series
                else np.zeros((0, d), dtype=np.float32)
            ),
            offsets=offsets(np.asarray(ctx, dtype=np.int64)),
            queries=np.concatenate([np.asarray(q, dtype=np.float64) for q in queries]) if series else np.zeros(0),
            query_offsets=offsets(np.fromiter(map(len, queries), dtype=np.int64, count=len(queries))),
        )

    @classmethod
    def concat(cls, parts: Sequence[PackedSeries]) -> PackedSeries:
        if len(parts) == 1:
            return parts[0]
        return cls(
            ids=[i for p in parts for i in p.ids],
            times=np.concatenate([p.times for p in parts]),
            values=np.concatenate([p.values for p in parts]),
            offsets=offsets(np.concatenate([np.diff(p.offsets) for p in parts])),
            queries=np.concatenate([p.queries for p in parts]),
            query_offsets=offsets(np.concatenate([np.diff(p.query_offsets) for p in parts])),
        )

    def take(self, start: int, stop: int) -> PackedSeries:
        """Series start:stop (views of the flat arrays)."""
        o, q = self.offsets, self.query_offsets
        return PackedSeries(
            ids=self.ids[start:stop],
            times=self.times[o[start] : o[stop]],
            values=self.values[o[start] : o[stop]],
            offsets=o[start : stop + 1] - o[start],
            queries=self.queries[q[start] : q[stop]],
            query_offsets=q[start : stop + 1] - q[start],
        )

    def anchors(self, anchor: str) -> np.ndarray:
        """(B,) absolute time of each series' z0: its first ("first") or last ("last") observation."""
        return self.times[self.offsets[:-1]] if anchor == "first" else self.times[self.offsets[1:] - 1]

    def context_batch(self, normalizer: Normalizer, anchor: str) -> Batch:
        """The encoder's padded input: all points of every series are context (and targets), padded as
        `models.data.collate` pads them."""
        counts = np.diff(self.offsets)
        anchors = self.anchors(anchor)
        f32 = torch.float32
        ctx_t = torch.as_tensor(pad(self.times - np.repeat(anchors, counts), self.offsets, 0.0), dtype=f32)
        norm = pad(normalizer.transform(self.values), self.offsets, np.nan)  # (B, T, D), NaN = missing
        ctx_m = torch.as_tensor(~np.isnan(norm), dtype=f32)
        ctx_x = torch.as_tensor(np.nan_to_num(norm, nan=0.0), dtype=f32)
        return Batch(
            ids=list(self.ids),
            ctx_t=ctx_t,
            ctx_x=ctx_x,
            ctx_m=ctx_m,
            ctx_len=torch.as_tensor(counts, dtype=torch.long),
            tgt_t=ctx_t,
            tgt_x=ctx_x,
            tgt_m=ctx_m,
            tgt_future=torch.zeros(len(self), ctx_t.shape[1], dtype=torch.bool),
            anchor=torch.as_tensor(anchors, dtype=torch.float64),
        )

    def padded_queries(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, Qmax) query times relative to each anchor, each row padded with its own last query (the
        solver deduplicates it), and the (row, column) of every flat query in that array."""
        counts = np.diff(self.query_offsets)
        row, col = rows_cols(self.query_offsets)
        rel = self.queries - np.repeat(anchors, counts)
        out = np.repeat(rel[self.query_offsets[1:] - 1][:, None], int(counts.max()), axis=1)
        out[row, col] = rel
        return out, row, col


def pack(
    ids: list[str],
    ts: np.ndarray,
    n_obs: np.ndarray,
    values: np.ndarray,
    tq: np.ndarray,
    n_q: np.ndarray,
    time: TimeSpec,
    max_horizon: float,
    show: Show,
    normalizer: Normalizer | None = None,
    max_sigmas: float = math.inf,
) -> PackedSeries:
    """Check a request's series as flat arrays and pack them in model time. ts (N,) / tq (M,) times in
    the model's time unit, absolute; values (N, D), NaN = not observed; n_obs / n_q per series (B,).

    Every check runs over the whole request at once; only a failing one looks for the first series and
    element it concerns (`FieldError`; `show` renders an element as the user sent it). Rows with nothing
    observed are dropped after the ordering check; times become model time from each series' first
    observation (the dynamics are time-invariant).

    What the model cannot represent is refused rather than answered with garbage: values beyond
    float32, non-positive values of log channels, values more than `max_sigmas` training standard
    deviations from the training mean (with `normalizer`), observations spanning more than
    `max_horizon` (model time), and queries further than that from a series' observations."""
    off, qoff = offsets(n_obs), offsets(n_q)
    for name, t, o in (("timestamps", ts, off), ("query_times", tq, qoff)):
        bad = np.flatnonzero(~np.isfinite(t))
        if bad.size:
            i, j = locate(o, int(bad[0]))
            raise FieldError(i, name, j, "must be a finite number")
    _check_values(values, off, normalizer, max_sigmas)
    gaps = np.diff(ts)
    gaps[off[1:-1] - 1] = np.inf  # differences across series boundaries do not count
    bad = np.flatnonzero(gaps <= 0)
    if bad.size:
        i, j = locate(off, int(bad[0]) + 1)
        raise FieldError(
            i,
            "timestamps",
            j,
            f"must be strictly increasing: [{j}] = {show('timestamps', i, j)} does not come after "
            f"[{j - 1}] = {show('timestamps', i, j - 1)}",
        )
    observed = ~np.isnan(values).all(axis=1)
    n_seen = np.add.reduceat(observed.astype(np.int64), off[:-1]) if len(ids) else np.zeros(0, dtype=np.int64)
    empty = np.flatnonzero(n_seen == 0)
    if empty.size:
        raise FieldError(int(empty[0]), "values", None, "no observed value at all; a series needs at least one")
    origin = ts[off[:-1]]
    times = (ts - np.repeat(origin, n_obs)) * time.scale
    queries = (tq - np.repeat(origin, n_q)) * time.scale
    lo = np.minimum.reduceat(np.where(observed, times, np.inf), off[:-1])
    hi = np.maximum.reduceat(np.where(observed, times, -np.inf), off[:-1])
    unit = f"{time.unit}s" if time.unit != "unitless" else "time units"
    wide = np.flatnonzero(~(hi - lo <= min(max_horizon, _F32)))  # also catches spans beyond float32
    if wide.size:
        i = int(wide[0])
        raise FieldError(
            i,
            "timestamps",
            None,
            f"the observations span {(hi[i] - lo[i]) / time.scale:.4g} {unit}; the limit is "
            f"{max_horizon / time.scale:.4g}",
            limit="max_horizon",
        )
    dist = np.maximum(np.maximum(np.repeat(lo, n_q) - queries, queries - np.repeat(hi, n_q)), 0.0)
    far = np.flatnonzero(~(dist <= min(max_horizon, _F32)))
    if far.size:
        k = int(far[0])
        i, j = locate(qoff, k)
        raise FieldError(
            i,
            "query_times",
            j,
            f"{show('query_times', i, j)} lies {dist[k] / time.scale:.4g} {unit} from the observations; the "
            f"limit is {max_horizon / time.scale:.4g}",
            limit="max_horizon",
        )
    return PackedSeries(
        ids=ids,
        times=times[observed],
        values=values[observed].astype(np.float32),
        offsets=offsets(n_seen),
        queries=queries,
        query_offsets=qoff,
    )


def _check_values(values: np.ndarray, off: np.ndarray, normalizer: Normalizer | None, max_sigmas: float) -> None:
    """values (N, D), NaN = not observed: within float32, positive on log channels, and within
    `max_sigmas` training standard deviations of the training mean (after the log)."""

    def fail(k: int, msg: str, limit: str | None = None) -> FieldError:
        row, col = divmod(k, values.shape[1])
        i, j = locate(off, row)
        return FieldError(i, "values", j, msg.format(col=col, v=values[row, col]), limit)

    big = np.flatnonzero(np.abs(values) > _F32)
    if big.size:
        raise fail(int(big[0]), "[{col}] = {v:.4g} is beyond float32 (±3.4e38)")
    if normalizer is None:
        return
    logged = np.asarray(normalizer.log, dtype=bool)
    if logged.any():
        bad = np.flatnonzero((values <= 0) & logged)
        if bad.size:
            k = int(bad[0])
            name = normalizer.channels[k % values.shape[1]]
            raise fail(k, f"[{{col}}] = {{v:.4g}}: channel {name!r} is modelled on a log scale; values must be > 0")
    if math.isfinite(max_sigmas):
        z = np.abs(normalizer.transform(values).astype(np.float64))
        far = np.flatnonzero(z > max_sigmas)
        if far.size:
            k = int(far[0])
            name = normalizer.channels[k % values.shape[1]]
            raise fail(
                k,
                f"[{{col}}] = {{v:.4g}} (channel {name!r}) lies {z.flat[k]:.3g} training standard deviations from "
                f"the training mean; the limit is {max_sigmas:g}",
                limit="max_sigmas",
            )


@dataclasses.dataclass(frozen=True)
class PackedForecast:
    """Forecasts of a `PackedSeries`, flat over its M query times.

    times (M,) the query times as asked; mean (M, D); quantiles (len(levels), M, D); samples (S, M, D)
    when asked; status (B,) 0 = ok, else a `models.solve.Status` code; nfe (B,) vector-field
    evaluations per trajectory of each series (mean over its samples; 0 for models without a solve).
    """

    ids: list[str]
    query_offsets: np.ndarray
    times: np.ndarray
    mean: np.ndarray
    quantiles: np.ndarray
    levels: tuple[float, ...]
    samples: np.ndarray | None
    status: np.ndarray
    nfe: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, start: int, stop: int) -> PackedForecast:
        """Series start:stop (views)."""
        q = self.query_offsets
        a, z = int(q[start]), int(q[stop])
        return PackedForecast(
            ids=self.ids[start:stop],
            query_offsets=q[start : stop + 1] - q[start],
            times=self.times[a:z],
            mean=self.mean[a:z],
            quantiles=self.quantiles[:, a:z],
            levels=self.levels,
            samples=self.samples[:, a:z] if self.samples is not None else None,
            status=self.status[start:stop],
            nfe=self.nfe[start:stop],
        )

    @classmethod
    def concat(cls, parts: Sequence[PackedForecast]) -> PackedForecast:
        if len(parts) == 1:
            return parts[0]
        samples = [p.samples for p in parts]
        return cls(
            ids=[i for p in parts for i in p.ids],
            query_offsets=offsets(np.concatenate([np.diff(p.query_offsets) for p in parts])),
            times=np.concatenate([p.times for p in parts]),
            mean=np.concatenate([p.mean for p in parts]),
            quantiles=np.concatenate([p.quantiles for p in parts], axis=1),
            levels=parts[0].levels,
            samples=None if any(s is None for s in samples) else np.concatenate(samples, axis=1),  # type: ignore[arg-type]
            status=np.concatenate([p.status for p in parts]),
            nfe=np.concatenate([p.nfe for p in parts]),
        )

    def split(self, sizes: Sequence[int]) -> list[PackedForecast]:
        """Consecutive parts of sizes[k] series each (one per request of a micro-batch)."""
        out, start = [], 0
        for n in sizes:
            out.append(self.take(start, start + n))
            start += n
        return out
