"""Known inputs: static covariates and events (doses, treatments), and how they enter the model.

A model may declare, beside its channels, *event* columns (a value at the time it happened or will
happen, absent elsewhere, in the past or the future of a series) and *static* columns (one value per
series). In a long table they are columns beside the channels; a row that carries only event values is
an event, and events after the last observation are the plan a forecast is asked under.

Each event kind feeds a bank of J learned one-compartment decays (`InputEffect`): after an event of value v at t_k,
compartment j holds g · v · exp(−λ_j (t − t_k)), summed over events (superposition, as a linear compartment under
bolus doses). A *level* kind (an infusion rate, a ventilator setting: a value held from its time until the next of
its kind) feeds its compartments through a first-order lag instead: each change Δ_k of the level adds g · Δ_k · (1 −
exp(−λ_j (t − t_k))), the closed form of dA/dt = λ_j (level(t) − A), so a held level is reached at rate λ_j. The
compartments are a linear ODE with jumps at the events, solved here in closed form, so an event is never smeared
across a solver step. An event counts from just after its time: a sample at a dose's time is the pre-dose value. The
decoder reads the compartments beside the latent state, the encoder reads them at each observation, and the static
covariates scale each series' gains g and rates λ and enter the encoder.

Shapes: B series, K events (padded), E event kinds, S static covariates, J rates, T or Q times.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from latentcast.frames import DataError, FlatTable, offsets, table_inputs

LOG_FLOOR = 0.05  # the log feature of a compartment is log(LOG_FLOOR + amount), amount in typical events
RATE_RANGE = (0.1, 20.0)  # the first and last compartment's initial rate (per model time unit)
# beyond these an input is refused, not extrapolated: the compartments' log features saturate and the
# solve degenerates (an event over EVENT_LIMIT times the largest of its kind in training; a static
# covariate further than STATIC_LIMIT training ranges outside its range)
EVENT_LIMIT = 5.0
STATIC_LIMIT = 10.0
AMOUNT_TERMS = 1 << 22  # (series × times × events × kinds × rates) terms summed at once


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The inputs a model was trained with, and their scales (fitted on the training series).

    events, static: column names; levels: the event columns that are levels (held until the next value of their
    kind, as an infusion rate) rather than amounts given at once. event_scale (E,): the root mean square of each
    kind's training events (one normalised unit: a typical event). static_mean, static_std (S,): each covariate's
    training mean and standard deviation. event_max (E,), static_min, static_max (S,): the training range, behind
    the warnings on inputs outside it (empty in checkpoints that did not record it).
    """

    events: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    event_scale: tuple[float, ...] = ()
    static_mean: tuple[float, ...] = ()
    static_std: tuple[float, ...] = ()
    event_max: tuple[float, ...] = ()
    static_min: tuple[float, ...] = ()
    static_max: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    event_min: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        names = [*self.events, *self.static]
        if len(set(names)) != len(names):
            raise DataError(
                f"inputs: a column is named twice among events {list(self.events)} and static {list(self.static)}"
            )
        if set(self.levels) - set(self.events):
            raise DataError(f"inputs: levels {sorted(set(self.levels) - set(self.events))} are not event columns")

    @property
    def is_level(self) -> tuple[bool, ...]:
        """(E,) which event kinds are levels."""
        return tuple(e in self.levels for e in self.events)

    def __bool__(self) -> bool:
        return bool(self.events or self.static)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.events, *self.static)

    @staticmethod
    def fit(
        series: Sequence[Any], events: Sequence[str], static: Sequence[str], levels: Sequence[str] = ()
    ) -> InputSpec:
        """Scales from training `Series` (their `inputs`); `levels` among `events`."""
        if not events and not static:
            return InputSpec()
        held = [s.inputs for s in series if s.inputs is not None]
        ev = np.concatenate([h.values for h in held]) if held else np.zeros((0, len(events)))
        scale, top, low = [], [], []
        for j, name in enumerate(events):
            col = ev[:, j][~np.isnan(ev[:, j])] if len(ev) else np.zeros(0)
            rms = float(np.sqrt(np.mean(col.astype(np.float64) ** 2))) if col.size else 0.0
            if rms == 0.0:
                raise DataError(f"event column {name!r} has no non-zero value in the training series")
            scale.append(rms)
            top.append(float(np.abs(col).max()))
            low.append(float(col.min()))
        st = np.stack([h.static for h in held]) if held else np.zeros((0, len(static)))
        mean, std, lo, hi = [], [], [], []
        for j, name in enumerate(static):
            col = st[:, j][~np.isnan(st[:, j])] if len(st) else np.zeros(0)
            if col.size == 0:
                raise DataError(f"static column {name!r} has no value in the training series")
            mean.append(float(col.mean()))
            std.append(float(col.std()) if col.std() > 1e-8 else 1.0)
            lo.append(float(col.min()))
            hi.append(float(col.max()))
        return InputSpec(
            tuple(events), tuple(static), tuple(scale), tuple(mean), tuple(std), tuple(top), tuple(lo), tuple(hi),
            tuple(levels), tuple(low),
        )  # fmt: skip

    def unusual(self, x: SeriesInputs) -> list[tuple[str, int, str]]:
        """What lies outside the training inputs in one series' inputs, as (field, index, message): an event
        more than twice the largest of its kind, a static covariate further out than half the training
        range; the forecast then extrapolates (a model takes what it learned to be linear as linear)."""
        out = []
        if self.event_max:
            big = np.abs(np.nan_to_num(x.values)) > 2 * np.asarray(self.event_max)  # (k, E)
            for k, j in zip(*np.nonzero(big), strict=True):
                out.append(("event_values", int(k), f"{self.events[j]} {x.values[k, j]:g} is more than twice the "
                            f"largest in training ({self.event_max[j]:g}): the forecast extrapolates"))  # fmt: skip
        if self.event_min:
            negative = (np.nan_to_num(x.values) < 0) & (np.asarray(self.event_min) >= 0)  # (k, E)
            for k, j in zip(*np.nonzero(negative), strict=True):
                out.append(("event_values", int(k), f"{self.events[j]} {x.values[k, j]:g} is negative; training "
                            "had none: the forecast extrapolates"))  # fmt: skip
        if self.static_min:
            lo, hi = np.asarray(self.static_min), np.asarray(self.static_max)
            pad = (hi - lo) / 2
            for j in np.flatnonzero((x.static < lo - pad) | (x.static > hi + pad)).tolist():
                out.append(("static", j, f"{self.static[j]} {x.static[j]:g} lies far outside the training range "
                            f"[{lo[j]:g}, {hi[j]:g}]: the forecast extrapolates"))  # fmt: skip
        return out

    def beyond(self, x: SeriesInputs) -> list[tuple[str, int, str]]:
        """What one series' inputs hold that the model cannot represent, as (field, index, message): an event
        over EVENT_LIMIT times the largest of its kind in training, a static covariate further than
        STATIC_LIMIT training ranges outside its range, and two different values of a level at one time."""
        out = []
        if self.event_max:
            top = EVENT_LIMIT * np.asarray(self.event_max)
            for k, j in zip(*np.nonzero(np.abs(np.nan_to_num(x.values)) > top), strict=True):
                out.append(("event_values", int(k), f"{self.events[j]} {x.values[k, j]:g} is over {EVENT_LIMIT:g} "
                            f"times the largest in training ({self.event_max[j]:g}); the model cannot represent it "
                            "(check the unit)"))  # fmt: skip
        if self.static_min:
            lo, hi = np.asarray(self.static_min), np.asarray(self.static_max)
            pad = STATIC_LIMIT * np.maximum(hi - lo, np.abs(hi) * 1e-3 + 1e-12)
            for j in np.flatnonzero((x.static < lo - pad) | (x.static > hi + pad)).tolist():
                out.append(("static", j, f"{self.static[j]} {x.static[j]:g} lies over {STATIC_LIMIT:g} training "
                            f"ranges outside [{lo[j]:g}, {hi[j]:g}]; the model cannot represent it (check the "
                            "unit)"))  # fmt: skip
        for j in np.flatnonzero(self.is_level).tolist():
            seen = ~np.isnan(x.values[:, j])
            t, v = x.times[seen], x.values[seen, j]
            same = (t[1:] == t[:-1]) & (v[1:] != v[:-1])  # times are sorted
            if same.any():
                k = int(np.flatnonzero(seen)[int(np.flatnonzero(same)[0]) + 1])
                out.append(("event_values", k, f"level {self.events[j]!r} is given two values ({v[:-1][same][0]:g} "
                            f"and {v[1:][same][0]:g}) at one time ({t[1:][same][0]:g}); give one"))  # fmt: skip
        return out

    def held(self, times: np.ndarray, values: np.ndarray, static: np.ndarray) -> SeriesInputs:
        """One series' inputs of these kinds: times (k,), values (k, E), static (S,) (NaN: none, unknown)."""
        e, s = len(self.events), len(self.static)
        return SeriesInputs(
            np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float32).reshape(len(times), e),
            np.asarray(static, dtype=np.float32).reshape(s),
        )  # fmt: skip

    def none(self) -> SeriesInputs:
        """A series' inputs when it gives none: no event, every static unknown."""
        return self.held(np.zeros(0), np.zeros((0, len(self.events))), np.full(len(self.static), np.nan))

    def split(self, table: FlatTable, times: np.ndarray, n_channels: int) -> tuple[np.ndarray, list[SeriesInputs]]:
        """`split_inputs` for a table whose columns are the channels, then these events and statics."""
        return split_inputs(table, times, n_channels, self.events, self.static)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> InputSpec:
        if not d:
            return InputSpec()
        return InputSpec(*(tuple(d.get(f.name, ())) for f in dataclasses.fields(InputSpec)))

    def describe(self) -> dict[str, Any]:
        """What `GET /models` shows: the columns and their training scales."""
        top = self.event_max or (None,) * len(self.events)
        lo, hi = self.static_min or (None,) * len(self.static), self.static_max or (None,) * len(self.static)
        return {
            "events": [
                {"name": n, "kind": "level" if lv else "event", "typical": s, "largest": m}
                for n, s, m, lv in zip(self.events, self.event_scale, top, self.is_level, strict=True)
            ],
            "static": [
                {"name": n, "mean": m, "std": s, "min": a, "max": b}
                for n, m, s, a, b in zip(self.static, self.static_mean, self.static_std, lo, hi, strict=True)
            ],
        }


@dataclasses.dataclass(frozen=True)
class SeriesInputs:
    """One series' inputs: times (k,) float64 absolute model time, ascending; values (k, E) float32 raw
    (NaN: no event of that kind then); static (S,) float32 raw (NaN: unknown, read as the training mean)."""

    times: np.ndarray
    values: np.ndarray
    static: np.ndarray

    def scaled(self, factor: float) -> SeriesInputs:
        return dataclasses.replace(self, times=self.times * factor)


def split_inputs(
    table: FlatTable, times: np.ndarray, n_channels: int, events: Sequence[str], static: Sequence[str] = ()
) -> tuple[np.ndarray, list[SeriesInputs]]:
    """A table's rows (columns: D channels, then the `events` and `static` columns; `times` (N,) in the
    model's unit) → which rows observe a channel (N,) bool, and each series' inputs
    (`latentcast.frames.table_inputs`). A value float32 cannot hold is a DataError naming it."""
    found = table_inputs(table, n_channels, len(events), static)
    d, e = n_channels, len(events)
    far = np.abs(np.nan_to_num(table.values[:, d:])) > np.finfo(np.float32).max  # float32 cannot hold them
    if far.any():
        row, col = (int(x[0]) for x in np.nonzero(far))
        series = int(np.searchsorted(table.offsets, row, side="right") - 1)
        name = [*events, *static][col]
        value = table.values[row, d + col]
        raise DataError(
            f"series {table.ids[series]!r}: column {name!r} holds {value:g}, beyond float32's range (the model "
            "computes in float32)"
        )
    out = []
    for i, (a, z) in enumerate(zip(found.event_offsets[:-1].tolist(), found.event_offsets[1:].tolist(), strict=True)):
        rows = found.events[a:z]
        out.append(
            SeriesInputs(times[rows].astype(np.float64), table.values[rows, d : d + e].astype(np.float32),
                         found.static[i].astype(np.float32))
        )  # fmt: skip
    return found.observed, out


@dataclasses.dataclass(frozen=True)
class PackedInputs:
    """B series' inputs, flat: times (K,) float64 absolute model time, values (K, E) float32 raw, NaN =
    none; offsets (B + 1,); static (B, S) float32 raw, NaN = unknown."""

    times: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    static: np.ndarray

    @classmethod
    def from_series(cls, inputs: Sequence[SeriesInputs], n_events: int, n_static: int) -> PackedInputs:
        return cls(
            times=np.concatenate([x.times for x in inputs]) if inputs else np.zeros(0),
            values=np.concatenate([x.values for x in inputs]) if inputs else np.zeros((0, n_events), np.float32),
            offsets=offsets(np.asarray([len(x.times) for x in inputs], dtype=np.int64)),
            static=np.stack([x.static for x in inputs]) if inputs else np.zeros((0, n_static), np.float32),
        )

    def take(self, start: int, stop: int) -> PackedInputs:
        o = self.offsets
        return PackedInputs(
            self.times[o[start] : o[stop]],
            self.values[o[start] : o[stop]],
            o[start : stop + 1] - o[start],
            self.static[start:stop],
        )

    @staticmethod
    def concat(parts: Sequence[PackedInputs], n_events: int, n_static: int) -> PackedInputs:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return PackedInputs.from_series([], n_events, n_static)
        return PackedInputs(
            times=np.concatenate([p.times for p in parts]),
            values=np.concatenate([p.values for p in parts]),
            offsets=offsets(np.concatenate([np.diff(p.offsets) for p in parts])),
            static=np.concatenate([p.static for p in parts]),
        )

    def level_changes(self, spec: InputSpec) -> np.ndarray:
        """(K, E) the values, with each level kind's value replaced by its change from the previous value
        of that kind in the series (from 0 before the first); NaN (no value then) stays NaN (no change)."""
        out = self.values.copy()
        k = len(self.times)
        start = np.repeat(self.offsets[:-1], np.diff(self.offsets))  # (K,) each row's series start
        for j in np.flatnonzero(spec.is_level).tolist():
            col = self.values[:, j]
            seen = ~np.isnan(col)
            last = np.maximum.accumulate(np.where(seen, np.arange(k), -1))  # the latest value at or before
            prev = np.concatenate([[-1], last[:-1]]) if k else last
            prev_val = np.where(prev >= start, col[np.maximum(prev, 0)], 0.0) if k else col
            out[:, j] = np.where(seen, col - prev_val, np.nan)
        return out

    def batch(self, spec: InputSpec, anchors: np.ndarray) -> BatchInputs:
        """Padded, normalised tensors for the model; times relative to each series' anchor."""
        counts = np.diff(self.offsets)
        b, k = len(counts), max(int(counts.max(initial=0)), 1)
        row = np.repeat(np.arange(b), counts)
        col = np.arange(int(self.offsets[-1])) - np.repeat(self.offsets[:-1], counts)
        t = np.zeros((b, k))
        v = np.zeros((b, k, len(spec.events)), dtype=np.float32)
        m = np.zeros((b, k), dtype=bool)
        t[row, col] = self.times - np.repeat(anchors, counts)
        if len(spec.events):
            v[row, col] = np.nan_to_num(self.level_changes(spec) / np.asarray(spec.event_scale, dtype=np.float32))
        m[row, col] = True
        st = (self.static - np.asarray(spec.static_mean)) / np.asarray(spec.static_std) if spec.static else self.static
        f32 = torch.float32
        return BatchInputs(
            ev_t=torch.as_tensor(t, dtype=f32),
            ev_v=torch.as_tensor(v, dtype=f32),
            ev_m=torch.as_tensor(m),
            static=torch.as_tensor(np.nan_to_num(st.astype(np.float32)), dtype=f32),
        )


@dataclasses.dataclass
class BatchInputs:
    """ev_t (B, K) event times relative to each series' anchor; ev_v (B, K, E) values in typical events
    (a level kind: the change of the level; 0: none of that kind); ev_m (B, K) real events (False:
    padding); static (B, S) standardised (0: unknown)."""

    ev_t: torch.Tensor
    ev_v: torch.Tensor
    ev_m: torch.Tensor
    static: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> BatchInputs:
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, dtype) if dtype is not None and x.is_floating_point() else x.to(device)

        return BatchInputs(move(self.ev_t), move(self.ev_v), self.ev_m.to(device), move(self.static))


def collate_inputs(inputs: Sequence[SeriesInputs | None], spec: InputSpec, anchors: np.ndarray) -> BatchInputs:
    """`Series.inputs` of a batch → `BatchInputs` (a series without any: no events, unknown statics)."""
    held = [x if x is not None else spec.none() for x in inputs]
    return PackedInputs.from_series(held, len(spec.events), len(spec.static)).batch(spec, anchors)


def in_event_order(each: torch.Tensor, ev_m: torch.Tensor, dim: int) -> torch.Tensor:
    """Σ over the events axis `dim` of `each` (B, …, K, …), summed in event order and read at each series'
    last event (`ev_m` (B, K)): the padding after it (other series' events) cannot change the sum, so a
    series' answer does not depend on its batch. The events axis is dropped."""
    last = (ev_m.sum(1) - 1).clamp(min=0)  # (B,)
    shape = [1] * each.dim()
    shape[0] = -1
    index = last.view(shape).expand(*each.shape[:dim], 1, *each.shape[dim + 1 :])
    return each.cumsum(dim=dim).gather(dim, index).squeeze(dim)


class InputEffect(nn.Module):
    """The compartments of every event kind and what they add to the decoder.

    `amounts(t, inputs)`: (B, T, E·J) the compartments at times t (B, T), each a sum over the series'
    events strictly before t of g · v · exp(−λ (t − t_k)); log-gains and log-rates are linear in the
    static covariates (zero at the training mean); a level kind's changes Δ add g · Δ · (1 − exp(−λ (t − t_k)))
    instead. `features`: the amounts and log(LOG_FLOOR + amount⁺)
    (B, T, 2·E·J), the encoder's extra inputs (with the statics) and the decoder's (`forward`: their
    linear map to the D channels, zero at initialisation so a model starts as one without inputs).
    """

    def __init__(self, spec: InputSpec, n_channels: int, n_rates: int, latent_dim: int = 0):
        super().__init__()
        self.n_events, self.n_static, self.n_rates = len(spec.events), len(spec.static), n_rates
        lo, hi = RATE_RANGE
        rates = torch.logspace(math.log10(lo), math.log10(hi), n_rates) if n_rates > 1 else torch.tensor([1.0])
        self.log_rate = nn.Parameter(rates.log())
        width = self.n_events * n_rates
        self.static_gain = nn.Linear(self.n_static, width, bias=False) if self.n_static else None
        self.static_rate = nn.Linear(self.n_static, n_rates, bias=False) if self.n_static else None
        # with `latent_dim`, the series' own gains and rates from its posterior mean state too (as a population
        # PK model's random effects)
        self.state_gain = nn.Linear(latent_dim, width, bias=False) if latent_dim else None
        self.state_rate = nn.Linear(latent_dim, n_rates, bias=False) if latent_dim else None
        for lin in (self.static_gain, self.static_rate, self.state_gain, self.state_rate):
            if lin is not None:
                nn.init.zeros_(lin.weight)
        # the control of a vector field that reads the levels: fixed lag rates, no parameters (so the
        # adjoint, which differentiates the field's own parameters, stays exact)
        self.control_rate: torch.Tensor
        self.register_buffer("control_rate", rates.clone(), persistent=False)
        self.is_level: torch.Tensor
        self.register_buffer("is_level", torch.tensor(spec.is_level, dtype=torch.bool), persistent=False)
        self.n_levels = sum(spec.is_level)  # known here: the hot path asks without a device sync
        self.readout = nn.Linear(2 * width, n_channels)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    @property
    def n_features(self) -> int:
        return 2 * self.n_events * self.n_rates

    def amounts(self, t: torch.Tensor, inputs: BatchInputs, state: torch.Tensor | None = None) -> torch.Tensor:
        """t (B, T) → (B, T, E·J), computed over slices of T so that its (B, T, K, E, J) terms stay within
        AMOUNT_TERMS numbers whatever the number of events K. `state` (B, L): the series' posterior mean,
        which scales its gains and rates when the model learned to (None: the population's)."""
        b, n_t = t.shape
        if self.n_events == 0:
            return t.new_zeros(b, n_t, 0)
        per_time = b * inputs.ev_t.shape[1] * self.n_events * self.n_rates
        step = max(1, AMOUNT_TERMS // max(per_time, 1))
        if n_t > step:
            return torch.cat([self._amounts(t[:, i : i + step], inputs, state) for i in range(0, n_t, step)], dim=1)
        return self._amounts(t, inputs, state)

    def _amounts(self, t: torch.Tensor, inputs: BatchInputs, state: torch.Tensor | None) -> torch.Tensor:
        b, n_t = t.shape
        log_rate = self.log_rate.expand(b, -1)  # (B, J)
        if self.static_rate is not None:
            log_rate = log_rate + self.static_rate(inputs.static)
        if state is not None and self.state_rate is not None:
            log_rate = log_rate + self.state_rate(state)
        rate = log_rate.exp()
        lag = t[:, :, None] - inputs.ev_t[:, None, :]  # (B, T, K)
        after = (lag > 0) & inputs.ev_m[:, None, :]
        decay = torch.exp(-rate[:, None, None, :] * lag.clamp(min=0)[..., None])[:, :, :, None, :]  # (B, T, K, 1, J)
        if self.n_levels:  # a level's change approaches at each rate: 1 - exp(-λ lag)
            decay = torch.where(self.is_level[:, None], 1 - decay, decay)  # (B, T, K, E, J)
        decay = decay * after[..., None, None]
        each = decay * inputs.ev_v[:, None, :, :, None]  # (B, T, K, E, J)
        amount = in_event_order(each, inputs.ev_m, dim=2).reshape(b, n_t, -1)  # (B, T, E·J)
        if self.static_gain is not None:
            amount = amount * self.static_gain(inputs.static).exp()[:, None, :]
        if state is not None and self.state_gain is not None:
            amount = amount * self.state_gain(state).exp()[:, None, :]
        return amount

    @property
    def n_control(self) -> int:
        return self.n_levels * self.n_rates

    def control(self, t: torch.Tensor, inputs: BatchInputs, rows: torch.Tensor) -> torch.Tensor:
        """u(t) for solver rows: t scalar or (R,), rows (R,) each row's series in the batch → (R, E_level·J)
        each level kind through first-order lags at the fixed `control_rate`s, Σ_k Δ_k (1 − exp(−λ_j (t −
        t_k))) over the row's changes before t (continuous in t), summed in event order as `amounts`."""
        levels = self.is_level.nonzero().flatten()
        ev_t, ev_m = inputs.ev_t[rows], inputs.ev_m[rows]  # (R, K)
        lag = t.expand(len(rows))[:, None] - ev_t.to(t.dtype)  # (R, K)
        lagged = 1 - torch.exp(-self.control_rate.to(lag) * lag.clamp(min=0)[..., None])  # (R, K, J)
        lagged = lagged * ((lag > 0) & ev_m)[..., None]
        each = lagged[:, :, None, :] * inputs.ev_v[rows][:, :, levels, None].to(lag)  # (R, K, E_level, J)
        return in_event_order(each, ev_m, dim=1).reshape(len(rows), -1)

    def features(self, t: torch.Tensor, inputs: BatchInputs, state: torch.Tensor | None = None) -> torch.Tensor:
        a = self.amounts(t, inputs, state)
        return torch.cat([a, torch.log(LOG_FLOOR + a.clamp(min=0))], dim=-1)

    def forward(self, t: torch.Tensor, inputs: BatchInputs, state: torch.Tensor | None = None) -> torch.Tensor:
        """t (B, T) → what the inputs add to each channel's decoded value, (B, T, D) normalised."""
        return self.readout(self.features(t, inputs, state))

    def encoder_inputs(self, t: torch.Tensor, inputs: BatchInputs) -> torch.Tensor:
        """The encoder's extra inputs at the context times t (B, T): (B, T, 2·E·J + S)."""
        st = inputs.static[:, None, :].expand(-1, t.shape[1], -1)
        return torch.cat([self.features(t, inputs), st], dim=-1)
