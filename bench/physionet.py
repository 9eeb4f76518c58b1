"""PhysioNet 2012 on the t-PatchGNN protocol: scores of forecasts of every test observation at t ≥ 24 h
from the observations before, in min-max normalised units (min and max over train + val), MSE and MAE
per variable, then averaged over the variables that have targets.

A variable whose min equals its max over train + val (MechVent: only ever 1) is scored with scale 1,
in raw units: the benchmark's division by 1e-8 there would only blow up a model answering in raw units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from latentcast.models import Series
from latentcast.models.training import DatasetSplit
from latentcast.models.training.datasets.physionet2012 import CHANNELS

# t-PatchGNN (Zhang et al., ICML 2024), Table 3, PhysioNet: test MSE ×10⁻³ and MAE ×10⁻², mean of 5 seeds
PUBLISHED = {
    "CRU": (8.56, 5.16),
    "Neural Flow": (7.20, 4.67),
    "mTAND": (6.23, 4.51),
    "Latent-ODE": (6.05, 4.23),
    "Warpformer": (5.94, 4.21),
    "GRU-D": (5.59, 4.08),
    "t-PatchGNN": (4.98, 3.72),
    "GraFITi": (4.89, 3.65),
}

# forecast(series with their context, the query times of each) → raw-unit means, one (Q, D) per series
Forecast = Callable[[Sequence[Series], Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Scale:
    """Per-variable min and (max − min) over train + val; 1 where a variable is constant."""

    low: np.ndarray
    width: np.ndarray
    mean: np.ndarray

    @staticmethod
    def fit(split: DatasetSplit) -> Scale:
        values = np.concatenate([s.values for s in (*split.train, *split.val)]).astype(np.float64)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        width = np.where(high > low, high - low, 1.0)
        return Scale(low, width, np.nanmean(values, axis=0))


def validation_as_test(split: DatasetSplit) -> DatasetSplit:
    """The split with its validation series in the test slot, for scoring on validation as on test."""
    return dataclasses.replace(split, test=split.val)


def targets(series: Sequence[Series]) -> tuple[list[Series], list[np.ndarray]]:
    """Series with at least one observation at t ≥ 24 h (their n_context cut), and those times."""
    kept = [s for s in series if s.n_context is not None and s.n_context < len(s)]
    return kept, [s.times[s.n_context :] for s in kept]


def score(series: Sequence[Series], preds: Sequence[np.ndarray], scale: Scale) -> dict[str, object]:
    """MSE and MAE per variable over all targets, then averaged over variables with targets."""
    err = np.zeros(len(CHANNELS))
    abs_err = np.zeros(len(CHANNELS))
    count = np.zeros(len(CHANNELS))
    for s, p in zip(series, preds, strict=True):
        truth = s.values[s.n_context :].astype(np.float64)
        seen = ~np.isnan(truth)
        d = np.where(seen, (np.asarray(p, dtype=np.float64) - np.nan_to_num(truth)) / scale.width, 0.0)
        err += (d**2).sum(axis=0)
        abs_err += np.abs(d).sum(axis=0)
        count += seen.sum(axis=0)
    has = count > 0
    mse_var = np.where(has, err / np.maximum(count, 1), np.nan)
    mae_var = np.where(has, abs_err / np.maximum(count, 1), np.nan)
    return {
        "mse": float(np.nanmean(mse_var)),
        "mae": float(np.nanmean(mae_var)),
        "variables": int(has.sum()),
        "targets": int(count.sum()),
        "mse_per_variable": {c: float(v) for c, v, h in zip(CHANNELS, mse_var, has, strict=True) if h},
    }


def locf(series: Sequence[Series], queries: Sequence[np.ndarray], scale: Scale) -> list[np.ndarray]:
    """Each variable's last value before 24 h carried forward; the train + val mean if it has none."""
    out = []
    for s, q in zip(series, queries, strict=True):
        ctx = s.values[: s.n_context].astype(np.float64)
        last = scale.mean.copy()
        for j in range(ctx.shape[1]):
            seen = np.flatnonzero(~np.isnan(ctx[:, j]))
            if seen.size:
                last[j] = ctx[seen[-1], j]
        out.append(np.repeat(last[None], len(q), axis=0))
    return out
