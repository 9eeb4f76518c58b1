"""Post-hoc calibration of the predictive spread: one factor per channel, fitted on validation forecasts so
that the 80% interval covers 80% of held-out values.

The factor c widens (c > 1) or narrows each channel's predictive mixture about its mean, in normalised
units: every sample's deviation from the mean and the decoder's noise are multiplied by c. Coverage
grows with c, so c is found by bisection. The mean does not move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from latentcast.models.data import Series
from latentcast.models.forecast import Forecaster
from latentcast.models.metrics import LEVELS_80, forecast_contexts
from latentcast.models.quantiles import mixture_quantiles

TARGET, BAND = 0.8, (0.75, 0.85)  # refit only when validation coverage leaves the band
MIN_VALUES = 50  # held-out values of a channel needed to fit its factor: fewer would fit noise


def coverage(samples: torch.Tensor, std: torch.Tensor, target: torch.Tensor, c: float) -> float:
    """Share of `target` (N,) inside the 10–90% interval of the mixture of samples (S, N) ± std, with
    the spread multiplied by c."""
    mean = samples.mean(0)
    q = mixture_quantiles(mean + c * (samples - mean), std * c, LEVELS_80)
    return float(((target >= q[0]) & (target <= q[1])).double().mean())


def held_out(
    forecaster: Forecaster, series: Sequence[Series], contexts: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forecasts of each series' points after its context, in normalised units: samples (S, N, D), the
    held-out values (N, D) (NaN where not observed) and the decoder's noise scale (N, D)."""
    contexts = list(contexts or forecast_contexts(series))
    keep = [i for i, (s, c) in enumerate(zip(series, contexts, strict=True)) if c < len(s)]
    sel, ctx = [series[i] for i in keep], [contexts[i] for i in keep]
    norm = forecaster.normalizer
    d = len(norm.channels)
    if not sel:
        return np.zeros((forecaster.num_samples, 0, d)), np.zeros((0, d)), np.zeros((0, d))
    queries = [s.times[c:] for s, c in zip(sel, ctx, strict=True)]
    fc = forecaster.predict(sel, queries, n_context=ctx, normalized=True, return_samples=True)
    samples = np.concatenate([f.samples for f in fc if f.samples is not None], axis=1)  # (S, N, D)
    target = np.concatenate([norm.transform(s.values[c:]) for s, c in zip(sel, ctx, strict=True)])  # (N, D)
    std = forecaster.model.decoder.std.detach().cpu().double().numpy()
    return samples, target, np.broadcast_to(std, target.shape).copy()


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


def fit_spread(
    forecaster: Forecaster, series: Sequence[Series], contexts: Sequence[int] | None = None
) -> tuple[tuple[float, ...], dict[str, float]]:
    """Per-channel spread factors (1.0 where coverage is within BAND already) and the coverage each
    channel had before, from forecasts of each series' points after its context."""
    factors, before, _ = fit_factors(*held_out(forecaster, series, contexts), forecaster.normalizer.channels)
    return factors, before
