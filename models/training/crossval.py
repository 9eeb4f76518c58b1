"""Validation large enough to choose an epoch on, and cross-validation where a table is too small for one.

`sized_validation` moves series (in a seeded order) from training to validation until validation holds
`train.min_val_points` held-out points (and, where the share allows, the values per channel that
calibrating its interval needs), if that keeps validation within `train.max_val_share` of the
training and validation series. Where it cannot, `fold_splits` cuts the training and validation series
into `train.folds` folds; the trainer trains once per fold, `choose_epochs` picks the number of epochs
whose mean validation score over the folds is lowest, the final model is trained on every series for
that many epochs, and `pooled_report` scores and calibrates it on the folds' out-of-fold forecasts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.data import Series
from latentcast.models.forecast import Forecaster
from latentcast.models.training.calibrate import Calibration, HeldOut, fit_calibration, forecast_tasks
from latentcast.models.training.datasets import DatasetSplit
from latentcast.models.training.metrics import baseline_nmse, forecast_contexts, holdout_metrics
from latentcast.models.training.report import calibration_report


def held_out_points(series: Sequence[Series], task: str) -> int:
    """Points forecast when validating on `series` with `task` ("last" or "half")."""
    return sum(len(s) - c for s, c in zip(series, forecast_contexts(series, task), strict=True) if c < len(s))


@dataclasses.dataclass(frozen=True)
class Sizing:
    """What `sized_validation` did: `moved` series went from training to validation; `short` is True when
    validation still holds fewer points than wanted (a small table is cross-validated instead)."""

    points_before: int
    points: int
    moved: int
    short: bool

    def describe(self, wanted: int) -> str:
        moved = f"{self.moved} series moved from training to validation, " if self.moved else ""
        return f"{moved}validation holds {self.points} held-out points ({wanted} wanted)"


def held_out_values(series: Sequence[Series], task: str, channels: int) -> np.ndarray:
    """(D,) observed values forecast per channel when validating on `series` with `task`."""
    counts = np.zeros(channels, dtype=np.int64)
    for s, c in zip(series, forecast_contexts(series, task), strict=True):
        counts += np.isfinite(s.values[c:]).sum(0)
    return counts


def sized_validation(
    split: DatasetSplit, task: str, min_points: int, max_share: float, seed: int, min_values: int = 0
) -> tuple[DatasetSplit, Sizing]:
    """The split with validation grown to `min_points` held-out points, and to `min_values` held-out values
    of each channel (what a channel's interval calibration needs), within `max_share` of the training and
    validation series: as far as the share allows (`Sizing.short` when the points are not reached)."""
    d = len(split.channels)
    before, counts = held_out_points(split.val, task), held_out_values(split.val, task, d)
    if before >= min_points and (counts >= min_values).all():
        return split, Sizing(before, before, 0, False)
    pool = len(split.train) + len(split.val)
    order = np.random.default_rng([seed, 77]).permutation(len(split.train))
    val, points, moved = list(split.val), before, 0
    for i in order:
        done = points >= min_points and (counts >= min_values).all()
        if done or len(val) + 1 > max_share * pool:
            break
        s = split.train[int(i)]
        val.append(s)
        points += held_out_points([s], task)
        counts = counts + held_out_values([s], task, d)
        moved += 1
    taken = {s.id for s in val}
    train = [s for s in split.train if s.id not in taken]
    desc = dict(split.description, split={"train": len(train), "val": len(val), "test": len(split.test)})
    grown = dataclasses.replace(split, train=train, val=sorted(val, key=lambda s: s.id), description=desc)
    return grown, Sizing(before, points, moved, points < min_points)  # short: a small table cross-validates


def fold_splits(split: DatasetSplit, folds: int, seed: int) -> list[DatasetSplit]:
    """`folds` splits of the training and validation series: each validates on one fold, trains on the rest."""
    pool = sorted([*split.train, *split.val], key=lambda s: s.id)
    order = np.random.default_rng([seed, 78]).permutation(len(pool))
    parts = [sorted(int(i) for i in order[k::folds]) for k in range(folds)]
    out = []
    for k, part in enumerate(parts):
        held = set(part)
        train = [s for i, s in enumerate(pool) if i not in held]
        val = [pool[i] for i in part]
        desc = dict(split.description, fold=f"{k + 1}/{folds}", split={"train": len(train), "val": len(val)})
        out.append(dataclasses.replace(split, train=train, val=val, description=desc))
    return out


def score(row: dict[str, Any]) -> float:
    """An epoch's validation score: its held-out NMSE, else its validation loss."""
    return float(row["val_nmse"] if "val_nmse" in row else row["val_loss"])


def choose_epochs(histories: Sequence[Sequence[dict[str, Any]]], first: int = 1) -> tuple[int, list[float]]:
    """The number of epochs, `first` or more (a model still in its learning-rate warm-up is not trained),
    with the lowest mean validation score over the folds, and that mean per epoch. A fold that stopped
    early keeps its last score for the epochs it did not run."""
    curves = [[score(r) for r in h] for h in histories if h]
    longest = max(len(c) for c in curves)
    padded = np.array([c + [c[-1]] * (longest - len(c)) for c in curves], dtype=float)
    mean = padded.mean(0)
    start = min(max(first, 1), longest) - 1
    return start + int(np.argmin(mean[start:])) + 1, [float(x) for x in mean]


def pooled_report(
    folds: Sequence[tuple[ModelBundle, Sequence[Series]]], device: torch.device, task: str, samples: int = 32
) -> tuple[dict[str, Any], Calibration]:
    """The validation report of `models.report.training_report`, from each fold's model forecasting its own
    held-out series: the calibration fitted on all folds' forecasts together, then NMSE per channel
    weighted by each fold's held-out values and 80% coverage, with it."""
    first = folds[0][0]
    channels = list(first.channels)
    plain = [Forecaster(b.model, b.normalizer, device, num_samples=samples) for b, _ in folds]
    per_fold = [forecast_tasks(fc, val, task) for fc, (_, val) in zip(plain, folds, strict=True)]
    pooled = {t: HeldOut.concat([p[t] for p in per_fold]) for t in per_fold[0]}
    cal = fit_calibration(pooled, task, channels)
    sums: dict[str, dict[str, list[float]]] = {k: {} for k in ("latent_ode", "locf", "linear_trend")}
    series = points = 0
    inside = counted = 0.0
    for bundle, val in folds:
        contexts = forecast_contexts(val, task)
        fc = Forecaster(bundle.model, bundle.normalizer, device, num_samples=samples, spread=cal.spread,
                        persistence=cal.persistence)  # fmt: skip
        model = holdout_metrics(fc, val, contexts)
        base = baseline_nmse(val, contexts, bundle.normalizer)
        counts = np.sum([(~np.isnan(s.values[c:])).sum(0) for s, c in zip(val, contexts, strict=True)], axis=0)
        counts = np.broadcast_to(counts, (len(channels),)).tolist()  # (D,) held-out values per channel
        for name, m in (("latent_ode", model), ("locf", base["locf"]), ("linear_trend", base["linear_trend"])):
            for j, c in enumerate(channels):
                v = m.get(f"nmse_{c}")
                if v is not None and counts[j]:
                    sums[name].setdefault(c, []).extend([float(v) * counts[j], float(counts[j])])
        if model.get("coverage80") is not None:
            inside += float(model["coverage80"]) * sum(counts)
            counted += sum(counts)
        series += len(val)
        points += int(model.get("forecast_points", 0))
    rows: dict[str, dict[str, float | None]] = {}
    for name, per in sums.items():
        row: dict[str, float | None] = {
            c: (float(sum(per[c][0::2]) / sum(per[c][1::2])) if c in per else None) for c in channels
        }
        seen = [v for v in row.values() if v is not None]
        row["average"] = float(np.mean(seen)) if seen else None
        rows[name] = row
    model_avg, locf_avg = rows["latent_ode"]["average"], rows["locf"]["average"]
    return {
        "split": f"out-of-fold ({len(folds)} folds of the training and validation series)",
        "task": task,
        "series": series,
        "forecast_points": float(points),
        "nmse": rows,
        "coverage80": inside / counted if counted else None,
        **calibration_report(cal, first),
        "beats_locf": model_avg is not None and locf_avg is not None and model_avg < locf_avg,
    }, cal
