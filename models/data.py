"""Data pipeline: long tables → per-series arrays → normalised, padded batches. Pure functions.

The input format everywhere is a *long table*: one row per (series, time), a column `id`, a column
`time` (numbers or date-times) and one column per channel, empty/NaN where not observed.

Shapes: B series, T time points (padded), D channels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from latentcast.frames import DataError, from_frame, offsets, parse_times
from latentcast.models.inputs import BatchInputs, InputSpec, SeriesInputs, collate_inputs, split_inputs
from latentcast.times import TIME_UNITS, to_unit


@dataclasses.dataclass(frozen=True)
class Series:
    """One irregularly sampled series.

    times: (n,) float64 model time, strictly increasing. values: (n, D) float32 raw units, NaN =
    not observed; every row has at least one observed value. truth: (n, D) noise-free values where a
    synthetic data set knows them (evaluation only). n_context: how many leading points a data set
    designates as the observation window (the rest is the forecast window), if it does. inputs: its
    events and static covariates (`models.inputs`), for a model that takes them; events are known in
    the past and the future of any cut.
    """

    id: str
    times: np.ndarray
    values: np.ndarray
    truth: np.ndarray | None = None
    n_context: int | None = None
    inputs: SeriesInputs | None = None

    def __len__(self) -> int:
        return len(self.times)

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.values)

    def scaled(self, factor: float) -> Series:
        """The same series with its times (and its events' times) multiplied by `factor`."""
        inputs = self.inputs.scaled(factor) if self.inputs is not None else None
        return dataclasses.replace(self, times=self.times * factor, inputs=inputs)


@dataclasses.dataclass(frozen=True)
class TimeSpec:
    """model time = (time in `unit`) × `scale`; date-times are first expressed in `unit`."""

    unit: str = "day"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.unit not in TIME_UNITS:
            raise DataError(f"time unit {self.unit!r} is not one of {sorted(TIME_UNITS)}")
        if not self.scale > 0:
            raise DataError(f"time scale must be > 0, got {self.scale}")


def to_model_time(col: pd.Series, spec: TimeSpec, name: str = "time") -> np.ndarray:
    """A column of numbers (already in `spec.unit`) or date-times (datetime64 or strict ISO-8601
    strings) → float64 model time. Date-times become `spec.unit`s since the Unix epoch; only
    differences matter downstream."""
    times = parse_times(col, f"column {name!r}")
    if times.is_datetime:
        if spec.unit == "unitless":
            raise DataError(f"column {name!r}: this data/model takes numeric times, not date-times")
        return to_unit(times.values, spec.unit) * spec.scale
    return times.values * spec.scale


def series_from_frame(
    frame: pd.DataFrame,
    channels: Sequence[str],
    spec: TimeSpec,
    id_col: str = "id",
    time_col: str = "time",
    events: Sequence[str] = (),
    static: Sequence[str] = (),
) -> list[Series]:
    """Long table → one `Series` per id, sorted by time (the table → arrays step is `latentcast.frames`).

    `events` and `static` name input columns (`models.inputs`): each series keeps its events (rows with
    an event value, before or after its observations) and its one value of each static column in
    `Series.inputs`; a row with only event values is not an observation.

    Every channel must be a column. Rows with no observed channel are dropped; series left with no
    observation are dropped. Rows of one series at one time are merged where they agree (a repeated row,
    or channels reported in separate rows: `latentcast.frames.from_frame`); where they give a channel two
    different values they are an error: merge them upstream, we will not guess which value is right.
    """
    if not channels:
        raise DataError("name at least one channel")
    absent = [c for c in (id_col, time_col, *channels, *events, *static) if c not in frame.columns]
    if absent:
        raise DataError(f"columns {absent} not in the table (it has {list(frame.columns)})")
    InputSpec(tuple(events), tuple(static))  # names each column once
    overlap = sorted(set(channels) & {*events, *static})
    if overlap:
        raise DataError(f"columns {overlap} are named both as channels and as inputs; name each once")
    flat = from_frame(frame, [*channels, *events, *static], id_col, time_col)
    if flat.times.is_datetime:
        if spec.unit == "unitless":
            raise DataError(f"column {time_col!r}: this data/model takes numeric times, not date-times")
        times = to_unit(flat.times.values, spec.unit) * spec.scale
    else:
        times = flat.times.values * spec.scale
    d = len(channels)
    allv = flat.values.astype(np.float32)
    held: list[SeriesInputs | None] = [None] * len(flat.ids)
    if events or static:
        _, found = split_inputs(flat, times, d, events, static)
        held = list(found)
    vals = allv[:, :d]
    out: list[Series] = []
    twice: list[str] = []
    for i, (a, z) in enumerate(zip(flat.offsets[:-1], flat.offsets[1:], strict=True)):
        keep = ~np.isnan(vals[a:z]).all(axis=1)
        if not keep.any():
            continue
        t = times[a:z][keep]
        dup = np.flatnonzero(np.diff(t) == 0)  # rows that agree were merged by `from_frame`: these clash
        if dup.size:
            shown = flat.times.as_column()[a:z][keep].iloc[int(dup[0])]
            twice.append(f"series {flat.ids[i]!r} at {shown}")
            continue
        out.append(Series(id=flat.ids[i], times=t, values=vals[a:z][keep], inputs=held[i]))
    if twice:
        raise DataError(
            f"{len(twice)} series {'has' if len(twice) == 1 else 'have'} two rows at one time (column "
            f"{time_col!r}) that give a channel different values, e.g. {'; '.join(twice[:3])}: "
            "merge those rows (one value per channel and time); we will not guess which value is right"
        )
    return out


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """Per-channel standardisation, optionally after a log: x' = (f(x) - mean) / std, f = log or id.
    `mean` and `std` are the centre and scale: mean and standard deviation, or (robust) the median
    and the interquartile range / 1.349, which estimates the standard deviation of normal data, or
    (minmax) the minimum and the range. `method` says which ("" in checkpoints that did not record it)."""

    channels: tuple[str, ...]
    log: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str = ""

    def scale_words(self) -> tuple[str, str]:
        """How messages name one normalised unit and the centre: e.g. ("robust scales (training IQR / 1.349)",
        "the training median")."""
        return _SCALE_WORDS.get(self.method, _SCALE_WORDS[""])

    @staticmethod
    def fit(
        series: Sequence[Series],
        channels: Sequence[str],
        log_channels: Sequence[str] = (),
        method: str = "standard",
    ) -> Normalizer:
        """Fit on (training) series: statistics over all observed values of each channel."""
        unknown = set(log_channels) - set(channels)
        if unknown:
            raise DataError(f"log channels {sorted(unknown)} are not among the channels {list(channels)}")
        if not series:
            raise DataError("cannot fit normalisation statistics on zero series")
        allv = np.concatenate([s.values for s in series]).astype(np.float64)
        log = tuple(c in log_channels for c in channels)
        means, stds = [], []
        for j, c in enumerate(channels):
            col = allv[:, j]
            col = col[~np.isnan(col)]
            if col.size == 0:
                raise DataError(f"channel {c!r} has no observed value in the training series")
            if log[j]:
                if (col <= 0).any():
                    raise DataError(f"channel {c!r} has values <= 0; remove it from log_channels")
                col = np.log(col)
            centre, sd = float(col.mean()), float(col.std())
            if method == "minmax":
                centre, sd = float(col.min()), float(col.max() - col.min())
            elif method == "robust":
                q25, q50, q75 = np.percentile(col, [25, 50, 75])
                centre = float(q50)
                sd = float(q75 - q25) / 1.349 if q75 > q25 else sd  # a mostly constant channel: the SD
            means.append(centre)
            stds.append(sd if sd > 1e-8 else 1.0)
        return Normalizer(tuple(channels), log, tuple(means), tuple(stds), method)

    def transform(self, values: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(…, D) raw → normalised, as `dtype` (float64: no overflow for values far out); NaN stays NaN."""
        v = np.asarray(values, dtype=np.float64)
        logged = np.asarray(self.log)
        if logged.any():
            v = v.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                v[..., logged] = np.log(v[..., logged])
        with np.errstate(over="ignore"):
            return ((v - np.asarray(self.mean)) / np.asarray(self.std)).astype(dtype)

    def transform_one(self, value: float, channel: int) -> float:
        """One raw value of one channel → normalised (−inf for a value ≤ 0 of a log channel)."""
        v = (np.log(value) if value > 0 else -np.inf) if self.log[channel] else value
        return float((v - self.mean[channel]) / self.std[channel])

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """(…, D) raw → normalised on tensors, `transform`'s twin (values ≤ 0 of log channels: far below)."""
        mean = torch.as_tensor(self.mean, dtype=values.dtype, device=values.device)
        std = torch.as_tensor(self.std, dtype=values.dtype, device=values.device)
        if any(self.log):
            logged = torch.as_tensor(self.log, device=values.device)
            values = torch.where(logged, torch.log(values.clamp(min=1e-30)), values)
        return (values - mean) / std

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        """(…, D) normalised → raw units (quantiles map to quantiles: the map is monotone per channel)."""
        mean = torch.as_tensor(self.mean, dtype=values.dtype, device=values.device)
        std = torch.as_tensor(self.std, dtype=values.dtype, device=values.device)
        raw = values * std + mean
        logged = torch.as_tensor(self.log, device=values.device)
        return torch.where(logged, torch.exp(raw.clamp(max=80.0)), raw) if any(self.log) else raw

    def to_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, str) else list(v) for k, v in dataclasses.asdict(self).items()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Normalizer:
        return Normalizer(
            tuple(d["channels"]), tuple(d["log"]), tuple(d["mean"]), tuple(d["std"]), str(d.get("method", ""))
        )


_SCALE_WORDS = {
    "robust": ("robust scales (training IQR / 1.349)", "the training median"),
    "standard": ("training standard deviations", "the training mean"),
    "minmax": ("training ranges", "the training minimum"),
    "": ("training scales", "the training centre"),
}


def split_ids(
    ids: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """Deterministic train/val/test split by series id: independent of row order, seeded.

    Ids are sorted, shuffled by a seeded generator and cut by the fractions (rounded down, the
    remainder going to train). Every id lands in exactly one part.
    """
    uniq = sorted(set(ids))
    if len(uniq) != len(ids):
        raise DataError("series ids must be unique")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    shuffled = [uniq[i] for i in perm]
    n_val = int(fractions[1] * len(uniq))
    n_test = int(fractions[2] * len(uniq))
    n_train = len(uniq) - n_val - n_test
    return shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]


@dataclasses.dataclass
class Batch:
    """A padded batch. Times are relative to each series' anchor (its z0 time), in model units.

    ctx_*: the encoder's input, chronological, padded at the end to Tc.
        ctx_t (B, Tc), ctx_x (B, Tc, D) normalised with 0 where missing, ctx_m (B, Tc, D), ctx_len (B,)
    tgt_*: all points of each series (context and forecast window), padded to Tt.
        tgt_t (B, Tt), tgt_x (B, Tt, D), tgt_m (B, Tt, D) (0 on padding), tgt_future (B, Tt) bool
    anchor: (B,) float64 absolute model time of each series' z0.
    inputs: the series' events and static covariates (`models.inputs`), for a model that takes them.
    """

    ids: list[str]
    ctx_t: torch.Tensor
    ctx_x: torch.Tensor
    ctx_m: torch.Tensor
    ctx_len: torch.Tensor
    tgt_t: torch.Tensor
    tgt_x: torch.Tensor
    tgt_m: torch.Tensor
    tgt_future: torch.Tensor
    anchor: torch.Tensor
    inputs: BatchInputs | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move the model's inputs (floating ones to `dtype` if given); `anchor` (float64 bookkeeping)
        stays on the CPU."""
        tensors = ("ctx_t", "ctx_x", "ctx_m", "ctx_len", "tgt_t", "tgt_x", "tgt_m", "tgt_future")

        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, dtype) if dtype is not None and x.is_floating_point() else x.to(device)

        moved: dict[str, Any] = {k: move(getattr(self, k)) for k in tensors}
        inputs = self.inputs.to(device, dtype) if self.inputs is not None else None
        return dataclasses.replace(self, **moved, inputs=inputs)

    @property
    def size(self) -> int:
        return len(self.ids)

    def _last_position(self) -> torch.Tensor:
        """(B, D) each channel's last observed position in the context (0 where never observed)."""
        tc = self.ctx_x.shape[1]
        pos = torch.arange(1, tc + 1, device=self.ctx_x.device, dtype=self.ctx_x.dtype)[None, :, None]
        return (self.ctx_m * pos).argmax(dim=1)

    def last_observed(self) -> torch.Tensor:
        """(B, D) each channel's last observed value in the context (normalised), 0 where the context
        never observes it: the level a residual decoder forecasts changes from."""
        seen = self.ctx_m.amax(dim=1)  # (B, D)
        return self.ctx_x.gather(1, self._last_position()[:, None, :]).squeeze(1) * seen

    def last_times(self) -> torch.Tensor:
        """(B, D) the time of each channel's last observation in the context (the first context time where
        it is never observed)."""
        return self.ctx_t.gather(1, self._last_position())

    def hold_weight(self, query_t: torch.Tensor, persistence: torch.Tensor) -> torch.Tensor:
        """(B, Q, D) the weight of each channel's last observed value in a forecast at `query_t` (B, Q):
        exp(-|t - t_last| / τ) for the channel's τ in `persistence` (D,) (model time), 0 where τ is 0 or
        the context never observes the channel (models.calibrate.fit_persistence)."""
        t_last = self.last_times()  # (B, D)
        tau = persistence.to(query_t)
        gap = (query_t[:, :, None] - t_last[:, None, :]).abs()  # (B, Q, D)
        weight = torch.exp(-gap / tau.clamp(min=1e-12))
        seen = self.ctx_m.amax(dim=1)[:, None, :] > 0  # (B, 1, D)
        return torch.where(seen & (tau > 0), weight, torch.zeros_like(weight))

    def likelihood_mask(self, forecast_only: bool = False) -> torch.Tensor:
        """(B, Tt, D) which target values the likelihood scores: all observed, or only those after the context."""
        return self.tgt_m * self.tgt_future[..., None] if forecast_only else self.tgt_m


def rows_cols(offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every flat element: its series (row) and its position within the series (column)."""
    counts = np.diff(offs)
    row = np.repeat(np.arange(len(counts)), counts)
    col = np.arange(int(offs[-1])) - np.repeat(offs[:-1], counts)
    return row, col


def pad(flat: np.ndarray, offs: np.ndarray, fill: float) -> np.ndarray:
    """Flat rows (N, …) of B series → (B, Tmax, …) padded with `fill`, in one scatter. The one place
    where series are padded (training batches and forecasts alike)."""
    counts = np.diff(offs)
    row, col = rows_cols(offs)
    out = np.full((len(counts), int(counts.max(initial=0)), *flat.shape[1:]), fill, dtype=flat.dtype)
    out[row, col] = flat
    return out


def collate(
    series: Sequence[Series],
    normalizer: Normalizer,
    n_context: Sequence[int] | None = None,
    anchor: str = "first",
    inputs: InputSpec | None = None,
) -> Batch:
    """Series → padded `Batch`. n_context[i] leading points of series i feed the encoder (default:
    the series' own n_context, else all points); the targets are all points of the series. With
    `inputs` (a model's), the batch holds the series' events (all of them: past and future of the cut)
    and static covariates."""
    if not series:
        raise DataError("cannot collate zero series")
    if n_context is None:
        n_context = [s.n_context if s.n_context is not None else len(s) for s in series]
    if len(n_context) != len(series):
        raise DataError("n_context needs one entry per series")
    for s, c in zip(series, n_context, strict=True):
        if not 1 <= c <= len(s):
            raise DataError(f"series {s.id!r}: context length {c} outside [1, {len(s)}]")
    anchors = np.array(
        [s.times[0] if anchor == "first" else s.times[c - 1] for s, c in zip(series, n_context, strict=True)]
    )
    lengths = np.array([len(s) for s in series])
    ctx_len = np.asarray(n_context, dtype=np.int64)
    tgt_off, ctx_off = offsets(lengths), offsets(ctx_len)
    rel = np.concatenate([s.times - a for s, a in zip(series, anchors, strict=True)])  # (N,)
    norm = normalizer.transform(np.concatenate([s.values for s in series]))  # (N, D), NaN = missing
    in_ctx = np.concatenate([np.arange(n) < c for n, c in zip(lengths, ctx_len, strict=True)])
    ctx_x, tgt_x = pad(norm[in_ctx], ctx_off, np.nan), pad(norm, tgt_off, np.nan)
    future = pad(~in_ctx, tgt_off, False)  # (B, Tt) points after the context
    f32 = torch.float32
    return Batch(
        ids=[s.id for s in series],
        ctx_t=torch.as_tensor(pad(rel[in_ctx], ctx_off, 0.0), dtype=f32),
        ctx_x=torch.as_tensor(np.nan_to_num(ctx_x), dtype=f32),
        ctx_m=torch.as_tensor(~np.isnan(ctx_x), dtype=f32),
        ctx_len=torch.as_tensor(ctx_len, dtype=torch.long),
        tgt_t=torch.as_tensor(pad(rel, tgt_off, 0.0), dtype=f32),
        tgt_x=torch.as_tensor(np.nan_to_num(tgt_x), dtype=f32),
        tgt_m=torch.as_tensor(~np.isnan(tgt_x), dtype=f32),
        tgt_future=torch.as_tensor(future),
        anchor=torch.as_tensor(anchors, dtype=torch.float64),
        inputs=collate_inputs([s.inputs for s in series], inputs, anchors) if inputs else None,
    )


def random_windows(series: Sequence[Series], max_span: float, rng: np.random.Generator) -> list[Series]:
    """Each series spanning more than `max_span` (model time) cut to the observations in [t_i, t_i + max_span]
    for a start t_i drawn uniformly among its observations that leave a full window; the others as they
    are (and no draw for them, so a table with no long series trains as without windows). Events and
    statics are kept whole: a dose before the window still acts in it."""
    out = []
    for s in series:
        if len(s) < 2 or s.times[-1] - s.times[0] <= max_span:
            out.append(s)
            continue
        starts = np.flatnonzero(s.times <= s.times[-1] - max_span)
        a = int(starts[rng.integers(len(starts))])
        b = int(np.searchsorted(s.times, s.times[a] + max_span, side="right"))
        truth = s.truth[a:b] if s.truth is not None else None
        out.append(dataclasses.replace(s, times=s.times[a:b], values=s.values[a:b], truth=truth, n_context=None))
    return out


def random_contexts(series: Sequence[Series], min_context: int, rng: np.random.Generator) -> list[int]:
    """One cut per series, uniform in [min(min_context, n - 1), n - 1]: at least one point is forecast
    whenever the series has two or more points (a single-point series is reconstructed)."""
    out = []
    for s in series:
        n = len(s)
        if n == 1:
            out.append(1)
            continue
        lo = max(1, min(min_context, n - 1))
        out.append(int(rng.integers(lo, n)))
    return out
