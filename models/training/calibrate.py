"""Post-hoc calibration, fitted on validation (or out-of-fold) forecasts after training.

Persistence: near a channel's last observed value, a forecast is pulled toward it: the predictive
distribution is shifted so that its mean is w · last + (1 − w) · the model's, w = exp(−|t − t_last| / τ)
with one τ per channel chosen on the held-out error of both tasks (the last point, the second half), or
off. Spread: one factor per channel so that the 80% interval covers 80% of held-out values. The factor c
widens (c > 1) or narrows each channel's predictive mixture about its mean, in normalised units: every
sample's deviation from the mean and the decoder's noise are multiplied by c. Coverage grows with c, so
c is found by bisection. The mean does not move.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from latentcast.models.data import Series
from latentcast.models.forecast import Forecaster
from latentcast.models.quantiles import mixture_quantiles
from latentcast.models.training.metrics import LEVELS_80, forecast_contexts

TARGET, BAND = 0.8, (0.75, 0.85)  # refit only when validation coverage leaves the band
MIN_VALUES = 50  # held-out values of a channel needed to fit its factor: fewer would fit noise
# time scales (model time: a median training series spans models.preprocess.TARGET_SPAN = 4) tried for
# the pull toward each channel's last value, and the least gain in held-out error that turns it on
PERSISTENCE_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MIN_GAIN = 0.01


def coverage(samples: torch.Tensor, std: torch.Tensor, target: torch.Tensor, c: float) -> float:
    """Share of `target` (N,) inside the 10–90% interval of the mixture of samples (S, N) ± std, with
    the spread multiplied by c."""
    mean = samples.mean(0)
    q = mixture_quantiles(mean + c * (samples - mean), std * c, LEVELS_80)
    return float(((target >= q[0]) & (target <= q[1])).double().mean())


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Forecasts of held-out points, normalised units: samples (S, N, D), the held-out values (N, D)
    (NaN where not observed), the decoder's noise scale (N, D), each channel's last value in the series'
    context (N, D) (NaN where none) and the model time from that value to the point (N, D)."""

    samples: np.ndarray
    target: np.ndarray
    std: np.ndarray
    last: np.ndarray
    since: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[HeldOut]) -> HeldOut:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts], axis=1 if f.name == "samples" else 0)
                     for f in dataclasses.fields(cls)))  # fmt: skip

    def held(self, persistence: Sequence[float] | None) -> np.ndarray:
        """The samples as a forecaster with these time scales gives them (`LatentODE.predict`)."""
        if persistence is None or not any(persistence):
            return self.samples
        return self.samples + hold(self.since, persistence, self.last) * (
            np.nan_to_num(self.last) - self.samples.mean(0)
        )


def hold(since: np.ndarray, persistence: Sequence[float], last: np.ndarray) -> np.ndarray:
    """(N, D) the weight of the last value: exp(-|since| / τ), 0 where τ is 0 or there is no last value."""
    tau = np.asarray(persistence, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.exp(-np.abs(since) / np.where(tau > 0, tau, 1.0))
    return np.where((tau > 0) & ~np.isnan(last), np.nan_to_num(w), 0.0)


def held_out(forecaster: Forecaster, series: Sequence[Series], contexts: Sequence[int] | None = None) -> HeldOut:
    """Forecasts of each series' points after its context (`HeldOut`)."""
    contexts = list(contexts or forecast_contexts(series))
    keep = [i for i, (s, c) in enumerate(zip(series, contexts, strict=True)) if c < len(s)]
    sel, ctx = [series[i] for i in keep], [contexts[i] for i in keep]
    norm = forecaster.normalizer
    d = len(norm.channels)
    if not sel:
        empty = np.zeros((0, d))
        return HeldOut(np.zeros((forecaster.num_samples, 0, d)), empty, empty, empty, empty)
    queries = [s.times[c:] for s, c in zip(sel, ctx, strict=True)]
    fc = forecaster.predict(sel, queries, n_context=ctx, normalized=True, return_samples=True)
    samples = np.concatenate([f.samples for f in fc if f.samples is not None], axis=1)  # (S, N, D)
    target = np.concatenate([norm.transform(s.values[c:]) for s, c in zip(sel, ctx, strict=True)])  # (N, D)
    std = forecaster.model.decoder.std.detach().cpu().double().numpy()
    last, since = [], []
    for s, c in zip(sel, ctx, strict=True):
        values = norm.transform(s.values[:c])  # (c, D)
        seen = ~np.isnan(values)
        pos = np.where(seen.any(0), c - 1 - np.argmax(seen[::-1], axis=0), -1)  # (D,) last observed row
        at = np.where(pos >= 0, values[np.maximum(pos, 0), np.arange(d)], np.nan)
        last.append(np.broadcast_to(at, (len(s) - c, d)))
        since.append(s.times[c:, None] - np.where(pos >= 0, s.times[np.maximum(pos, 0)], np.nan)[None, :])
    return HeldOut(samples, target, np.broadcast_to(std, target.shape).copy(), np.concatenate(last),
                   np.concatenate(since))  # fmt: skip


def fit_factors(
    samples: np.ndarray,
    target: np.ndarray,
    std: np.ndarray,
    channels: Sequence[str],
    lo: float = 0.2,
    hi: float = 5.0,
    iters: int = 14,
) -> tuple[tuple[float, ...], dict[str, float], dict[str, float]]:
    """Per-channel spread factors (1.0 where coverage is within BAND already, or with fewer than
    MIN_VALUES held-out values) from samples (S, N, D), held-out values (N, D) and noise scales (N, D);
    the coverage each channel had before, and has with its factor."""
    factors, before, after = [], {}, {}
    for j, name in enumerate(channels):
        seen = ~np.isnan(target[:, j])
        if not seen.any():
            factors.append(1.0)
            continue
        x = torch.as_tensor(samples[:, seen, j], dtype=torch.float64)
        y = torch.as_tensor(target[seen, j], dtype=torch.float64)
        sd = torch.as_tensor(std[seen, j], dtype=torch.float64)
        cov = coverage(x, sd, y, 1.0)
        if seen.sum() < MIN_VALUES:  # too few held-out values to fit a factor
            factors.append(1.0)
            after[name] = cov
            continue
        before[name] = cov
        if BAND[0] <= cov <= BAND[1]:
            factors.append(1.0)
            after[name] = cov
            continue
        a, b = lo, hi
        for _ in range(iters):  # geometric bisection: coverage grows with the factor
            mid = (a * b) ** 0.5
            a, b = (mid, b) if coverage(x, sd, y, mid) < TARGET else (a, mid)
        factors.append(round((a * b) ** 0.5, 4))
        after[name] = coverage(x, sd, y, factors[-1])
    return tuple(factors), before, after


def fit_persistence(
    tasks: Mapping[str, HeldOut], channels: Sequence[str], min_gain: float = MIN_GAIN
) -> tuple[tuple[float, ...] | None, dict[str, dict[str, float]]]:
    """Per channel, the time scale τ (model time, from PERSISTENCE_GRID, or 0: off) of the pull toward
    its last value that most lowers the held-out squared error of the mean, in the geometric mean over
    `tasks` (e.g. the last point and the second half of each series), among the scales that make no task
    worse; on only where that gain is at least `min_gain` and the channel has MIN_VALUES held-out values.
    Returns the scales (None: all off) and, per channel fitted, its error ÷ the error without, per task."""
    taus, gains = [], {}
    for j, name in enumerate(channels):
        per_task = []
        for task, h in tasks.items():
            seen = ~np.isnan(h.target[:, j]) & ~np.isnan(h.last[:, j])
            if seen.any():
                centre, y = h.samples[:, seen, j].mean(0), h.target[seen, j]
                per_task.append((task, centre, y, h.last[seen, j], h.since[seen, j]))
        if sum(len(p[2]) for p in per_task) < MIN_VALUES:
            taus.append(0.0)
            continue

        base = np.maximum(_errors(per_task, 0.0), 1e-300)
        ratios = {t: np.maximum(_errors(per_task, t), 1e-300) / base for t in PERSISTENCE_GRID}
        # a scale that makes any task worse is not a candidate: one task never pays for the other
        scores = {t: float(np.mean(np.log(r))) for t, r in ratios.items() if (r <= 1.0).all()}
        best = min(scores, key=scores.__getitem__) if scores else 0.0
        on = bool(scores) and scores[best] <= -min_gain
        taus.append(best if on else 0.0)
        ratio = [a / b if b > 0 else 1.0 for a, b in zip(_errors(per_task, best if on else 0.0), base, strict=True)]
        gains[name] = {p[0]: round(float(r), 4) for p, r in zip(per_task, ratio, strict=True)}
    return (tuple(taus) if any(taus) else None), gains


TASKS = ("last", "half")  # what persistence is chosen on: each series' last point, and its second half


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What is fitted after training, per channel: spread factors and persistence time scales (model
    time); None where nothing changed."""

    spread: tuple[float, ...] | None = None
    persistence: tuple[float, ...] | None = None
    coverage_before: dict[str, float] = dataclasses.field(default_factory=dict)
    error_ratio: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def _errors(per_task: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], tau: float) -> list[float]:
    """Per task, the mean squared error of the mean pulled toward the last value with time scale `tau`."""
    out = []
    for _, centre, y, last, since in per_task:
        w = np.exp(-np.abs(since) / tau) if tau > 0 else 0.0
        out.append(float(np.mean((centre + w * (last - centre) - y) ** 2)))
    return out


def fit_calibration(tasks: Mapping[str, HeldOut], task: str, channels: Sequence[str]) -> Calibration:
    """Persistence from plain forecasts of every task in `tasks`, then the spread factors on `task`'s
    forecasts as the persistence moves them."""
    persistence, ratio = fit_persistence(tasks, channels)
    h = tasks[task]
    factors, before, _ = fit_factors(h.held(persistence), h.target, h.std, channels)
    spread = factors if any(f != 1.0 for f in factors) else None
    return Calibration(spread, persistence, before, ratio)


def forecast_tasks(forecaster: Forecaster, series: Sequence[Series], task: str) -> dict[str, HeldOut]:
    """Plain held-out forecasts of `series` for persistence (TASKS) and for the spread (`task`)."""
    return {t: held_out(forecaster, series, forecast_contexts(series, t)) for t in dict.fromkeys((*TASKS, task))}
