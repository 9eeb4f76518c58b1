"""Ragged batches as flat arrays: many series, each with its own observation and query times.

A bulk request of 1,000 series spent more time in per-series Python (padding, slicing, one object per
series) than the GPU spent on the model. Here a batch is a handful of flat arrays plus offsets, and
padding to (B, T) happens in one scatter; the results come back flat over all query times.

Shapes: B series; N observations in all, series i owning rows offsets[i]:offsets[i + 1]; M query
times in all, series i owning query_offsets[i]:query_offsets[i + 1]; D channels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from latentcast.frames import offsets
from latentcast.models.data import Batch, Normalizer, Series, pad, rows_cols
from latentcast.models.inputs import InputSpec, PackedInputs, SeriesInputs


@dataclasses.dataclass(frozen=True)
class PackedSeries:
    """B series and their query times, flat.

    ids: B names. times (N,) float64 absolute model time, strictly increasing within a series.
    values (N, D) float32 raw units, NaN = not observed (every row has an observed value).
    offsets (B + 1,) int64. queries (M,) float64 absolute model time, any order, ≥ 1 per series.
    query_offsets (B + 1,) int64. inputs: the series' events and static covariates (`models.inputs`),
    for a model that takes them (None: none given).
    """

    ids: list[str]
    times: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    queries: np.ndarray
    query_offsets: np.ndarray
    inputs: PackedInputs | None = None

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
        if self.inputs is not None and len(self.inputs.offsets) != b + 1:
            raise ValueError("PackedSeries: inputs for another number of series")

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
        held = next((s.inputs for s in series if s.inputs is not None), None)
        inputs = None
        if held is not None:
            e, st = held.values.shape[1], len(held.static)
            none = SeriesInputs(np.zeros(0), np.zeros((0, e), np.float32), np.full(st, np.nan, np.float32))
            inputs = PackedInputs.from_series([s.inputs if s.inputs is not None else none for s in series], e, st)
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
            inputs=inputs,
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
            inputs=_concat_inputs([p.inputs for p in parts]),
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
            inputs=self.inputs.take(start, stop) if self.inputs is not None else None,
        )

    def with_values(self, values: np.ndarray) -> PackedSeries:
        """The same series with `values` (N, D) instead, rows left with nothing observed dropped; a
        ValueError names a series left with none."""
        observed = ~np.isnan(values).all(axis=1)
        if observed.all():
            return dataclasses.replace(self, values=values)
        counts = np.add.reduceat(observed.astype(np.int64), self.offsets[:-1]) if len(self) else np.zeros(0)
        if (counts == 0).any():
            raise ValueError(f"series {self.ids[int(np.flatnonzero(counts == 0)[0])]!r}: no observed value left")
        return dataclasses.replace(self, times=self.times[observed], values=values[observed], offsets=offsets(counts))

    def anchors(self, anchor: str) -> np.ndarray:
        """(B,) absolute time of each series' z0: its first ("first") or last ("last") observation."""
        return self.times[self.offsets[:-1]] if anchor == "first" else self.times[self.offsets[1:] - 1]

    def context_batch(self, normalizer: Normalizer, anchor: str, inputs: InputSpec | None = None) -> Batch:
        """The encoder's padded input: all points of every series are context (and targets), padded as
        `models.data.collate` pads them; with `inputs` (a model's), the series' events and statics (none
        held: no events, unknown statics)."""
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
            inputs=self._inputs(inputs).batch(inputs, anchors) if inputs else None,
        )

    def _inputs(self, spec: InputSpec) -> PackedInputs:
        """The held inputs, or none of `spec`'s kinds for every series."""
        if self.inputs is not None:
            return self.inputs
        return PackedInputs.from_series([spec.none()] * len(self), len(spec.events), len(spec.static))

    def padded_queries(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, Qmax) query times relative to each anchor, each row padded with its own last query (the
        solver deduplicates it), and the (row, column) of every flat query in that array."""
        counts = np.diff(self.query_offsets)
        row, col = rows_cols(self.query_offsets)
        rel = self.queries - np.repeat(anchors, counts)
        out = np.repeat(rel[self.query_offsets[1:] - 1][:, None], int(counts.max()), axis=1)
        out[row, col] = rel
        return out, row, col


def _concat_inputs(parts: Sequence[PackedInputs | None]) -> PackedInputs | None:
    """Inputs of consecutive parts: None when no part holds any (a part without them while others hold
    them is a ValueError: they would not line up)."""
    if all(p is None for p in parts):
        return None
    held = [p for p in parts if p is not None]
    if len(held) != len(parts):
        raise ValueError("PackedSeries.concat: some parts hold inputs and some do not")
    return PackedInputs.concat(held, held[0].values.shape[1], held[0].static.shape[1])


@dataclasses.dataclass(frozen=True)
class PackedForecast:
    """Forecasts of a `PackedSeries`, flat over its M query times.

    times (M,) the query times as asked; point (M, D) the point forecast: the predictive median on
    logged channels, the mean elsewhere (bench/results/point_forecast.md); mean (M, D) the predictive
    mean; quantiles (len(levels), M, D); samples (S, M, D)
    when asked; status (B,) 0 = ok, else a `models.solve.Status` code; nfe (B,) vector-field
    evaluations per trajectory of each series (mean over its samples; 0 for models without a solve);
    far (B,) how far the furthest number of each series' answer lies from the training data, in the
    model's normalised units (after the log of log channels), and far_channel (B,) its channel.
    """

    ids: list[str]
    query_offsets: np.ndarray
    times: np.ndarray
    point: np.ndarray
    mean: np.ndarray
    quantiles: np.ndarray
    levels: tuple[float, ...]
    samples: np.ndarray | None
    status: np.ndarray
    nfe: np.ndarray
    far: np.ndarray
    far_channel: np.ndarray

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
            point=self.point[a:z],
            mean=self.mean[a:z],
            quantiles=self.quantiles[:, a:z],
            levels=self.levels,
            samples=self.samples[:, a:z] if self.samples is not None else None,
            status=self.status[start:stop],
            nfe=self.nfe[start:stop],
            far=self.far[start:stop],
            far_channel=self.far_channel[start:stop],
        )

    def select(self, series: np.ndarray) -> PackedForecast:
        """These series (indices, ascending), copied."""
        if len(series) == len(self):
            return self
        counts = np.diff(self.query_offsets)[series]
        rows = np.repeat(self.query_offsets[series] - offsets(counts)[:-1], counts) + np.arange(int(counts.sum()))
        return PackedForecast(
            ids=[self.ids[i] for i in series.tolist()],
            query_offsets=offsets(counts),
            times=self.times[rows],
            point=self.point[rows],
            mean=self.mean[rows],
            # indexing an inner axis leaves the result strided: writers (orjson, Arrow) need C order
            quantiles=np.ascontiguousarray(self.quantiles[:, rows]),
            levels=self.levels,
            samples=np.ascontiguousarray(self.samples[:, rows]) if self.samples is not None else None,
            status=self.status[series],
            nfe=self.nfe[series],
            far=self.far[series],
            far_channel=self.far_channel[series],
        )

    @classmethod
    def empty(cls, n_channels: int, levels: Sequence[float], n_samples: int) -> PackedForecast:
        """The forecast of zero series (a request whose every series was refused)."""
        z = np.zeros(0)
        return cls(
            ids=[],
            query_offsets=np.zeros(1, dtype=np.int64),
            times=z,
            point=np.zeros((0, n_channels), dtype=np.float32),
            mean=np.zeros((0, n_channels), dtype=np.float32),
            quantiles=np.zeros((len(levels), 0, n_channels), dtype=np.float32),
            levels=tuple(levels),
            samples=np.zeros((n_samples, 0, n_channels), dtype=np.float32) if n_samples else None,
            status=np.zeros(0, dtype=np.int64),
            nfe=z,
            far=z,
            far_channel=np.zeros(0, dtype=np.int64),
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
            point=np.concatenate([p.point for p in parts]),
            mean=np.concatenate([p.mean for p in parts]),
            quantiles=np.concatenate([p.quantiles for p in parts], axis=1),
            levels=parts[0].levels,
            samples=None if any(s is None for s in samples) else np.concatenate(samples, axis=1),  # type: ignore[arg-type]
            status=np.concatenate([p.status for p in parts]),
            nfe=np.concatenate([p.nfe for p in parts]),
            far=np.concatenate([p.far for p in parts]),
            far_channel=np.concatenate([p.far_channel for p in parts]),
        )

    def split(self, sizes: Sequence[int]) -> list[PackedForecast]:
        """Consecutive parts of sizes[k] series each (one per request of a micro-batch)."""
        out, start = [], 0
        for n in sizes:
            out.append(self.take(start, start + n))
            start += n
        return out
