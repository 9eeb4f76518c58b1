"""Forecast metrics over held-out points: errors per channel, interval coverage, error against truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from latentcast.models.data import Normalizer, Series
from latentcast.models.forecast import Forecaster

LEVELS_80 = (0.1, 0.9)


def forecast_contexts(series: Sequence[Series], task: str = "last") -> list[int]:
    """The held-out task: a data set's own observation window, else "last": everything but the last
    point, or "half": the first half of the points (at least one), the rest forecast."""
    if task == "half":
        return [s.n_context if s.n_context is not None else max(1, (len(s) + 1) // 2) for s in series]
    return [s.n_context if s.n_context is not None else max(1, len(s) - 1) for s in series]


def _stack(parts: list[np.ndarray], width: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, width))


def holdout_metrics(
    forecaster: Forecaster,
    series: Sequence[Series],
    contexts: Sequence[int] | None = None,
    channels: Sequence[str] = (),
) -> dict[str, float]:
    """Forecast each series' points after its context and score them.

    Normalised units (the model's per-channel standardisation, after any log): `nmse` per channel and
    averaged over channels, `coverage80` of the 10–90% predictive interval. With noise-free truth
    (synthetic data): `rmse_truth`, in raw units, over all channels of all forecast points.
    """
    contexts = list(contexts or forecast_contexts(series))
    keep = [i for i, (s, c) in enumerate(zip(series, contexts, strict=True)) if c < len(s)]
    if not keep:
        return {}
    sel = [series[i] for i in keep]
    ctx = [contexts[i] for i in keep]
    queries = [s.times[c:] for s, c in zip(sel, ctx, strict=True)]
    norm = forecaster.normalizer
    fc = forecaster.predict(sel, queries, levels=LEVELS_80, n_context=ctx, normalized=True)
    d = len(norm.channels)
    target = _stack([norm.transform(s.values[c:]) for s, c in zip(sel, ctx, strict=True)], d)
    pred = _stack([f.mean for f in fc], d)
    lo = _stack([f.quantiles[LEVELS_80[0]] for f in fc], d)
    hi = _stack([f.quantiles[LEVELS_80[1]] for f in fc], d)
    obs = ~np.isnan(target)
    err = np.where(obs, (pred - target) ** 2, 0.0)
    counts = obs.sum(0)
    per_channel = err.sum(0) / np.maximum(counts, 1)
    names = list(channels or norm.channels)
    out: dict[str, float] = {
        f"nmse_{n}": float(v) for n, v in zip(names, per_channel, strict=True) if counts[names.index(n)]
    }
    out["nmse"] = float(np.mean([v for v, c in zip(per_channel, counts, strict=True) if c]))
    inside = (target >= lo) & (target <= hi)
    out["coverage80"] = float(inside[obs].mean())
    out["forecast_points"] = float(len(pred))
    out["failed_series"] = float(sum(f.status != 0 for f in fc))
    if all(s.truth is not None for s in sel):
        if any(norm.log):  # the raw-unit mean of a log channel is not the inverse map of its mean
            means = [f.mean for f in forecaster.predict(sel, queries, n_context=ctx)]
        else:
            means = [norm.inverse(torch.as_tensor(f.mean)).numpy() for f in fc]
        sq = [(m - s.truth[c:]) ** 2 for m, s, c in zip(means, sel, ctx, strict=True) if s.truth is not None]
        out["rmse_truth"] = float(np.sqrt(np.concatenate(sq).mean()))
    return out


def baseline_nmse(
    series: Sequence[Series], contexts: Sequence[int], normalizer: Normalizer
) -> dict[str, dict[str, float]]:
    """Two reference forecasts scored like `holdout_metrics` (normalised units):
    last observation carried forward, and a per-series, per-channel least-squares linear trend over the
    context (LOCF where a channel has fewer than two observations). Channels never observed in a
    series' context fall back to the training mean (0 in normalised units)."""
    d = len(normalizer.channels)
    preds: dict[str, list[np.ndarray]] = {"locf": [], "linear_trend": []}
    targets = []
    for s, c in zip(series, contexts, strict=True):
        if c >= len(s):
            continue
        x = normalizer.transform(s.values[:c])
        t, tq = s.times[:c], s.times[c:]
        locf = np.zeros((len(tq), d))
        trend = np.zeros((len(tq), d))
        for j in range(d):
            ok = ~np.isnan(x[:, j])
            if not ok.any():
                continue
            locf[:, j] = x[ok, j][-1]
            if ok.sum() >= 2 and np.ptp(t[ok]) > 0:
                slope, icpt = np.polyfit(t[ok], x[ok, j], 1)
                trend[:, j] = icpt + slope * tq
            else:
                trend[:, j] = locf[:, j]
        preds["locf"].append(locf)
        preds["linear_trend"].append(trend)
        targets.append(normalizer.transform(s.values[c:]))
    target = _stack(targets, d)
    obs = ~np.isnan(target)
    out: dict[str, dict[str, float]] = {}
    for name, parts in preds.items():
        pred = _stack(parts, d)
        per = np.where(obs, (pred - target) ** 2, 0.0).sum(0) / np.maximum(obs.sum(0), 1)
        res = {f"nmse_{n}": float(v) for n, v in zip(normalizer.channels, per, strict=True)}
        res["nmse"] = float(np.mean([v for v, k in zip(per, obs.sum(0), strict=True) if k]))
        out[name] = res
    return out
