"""Backtests on your own series: hold out the last point (or the second half) of each series, forecast it
from the rest, and score the model beside last-observation-carried-forward and a per-series linear trend.

Scores per channel, on the data's own scale: NMSE (squared error ÷ the variance of the held-out values),
MAE, CRPS (scoringrules' quantile estimator over 19 levels; a point forecast's CRPS is its absolute
error) and the coverage of the 50, 80 and 95% intervals. Every method is scored on the same points: those
whose channel was observed in the series' context (the baselines need a value to carry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scoringrules

from latentcast.frames import DataError, parse_times, quantile_column

if TYPE_CHECKING:
    from latentcast.api import Model
    from latentcast.models.training import DataConfig

Task = Literal["last", "half"]
TASKS: tuple[Task, ...] = ("last", "half")
INTERVALS = (0.5, 0.8, 0.95)
# 0.025, 0.05, …, 0.975: the quantile estimate of the CRPS, and every interval's ends
LEVELS = tuple(sorted({0.025, 0.975, *(round(0.05 * k, 2) for k in range(1, 20))}))
METHODS = ("latent_ode", "locf", "linear_trend")


@dataclasses.dataclass(frozen=True)
class Backtest:
    """scores: one row per method and channel (and "all": the mean over channels; coverage over all
    points), columns points, nmse, mae, crps, coverage50/80/95 (the model's). forecasts: id, time,
    channel, actual, the model's mean and quantiles, locf, linear_trend, one row per held-out point."""

    scores: pd.DataFrame
    forecasts: pd.DataFrame
    task: Task
    series: int
    points: int
    in_sample: int = 0  # of `series`, those the model was trained or validated on

    def summary(self) -> str:
        """The scores as a text table, with which forecast to use."""
        lines = [
            f"backtest ({self.task} point{'s' if self.task == 'half' else ''} of {self.series} series held out, "
            f"{self.points} points; on the data's scale, lower is better but coverage):",
            f"  {'method':14}{'channel':>14}{'points':>8}{'NMSE':>9}{'MAE':>11}{'CRPS':>11}{'cov50':>8}{'cov80':>8}"
            f"{'cov95':>8}",
        ]
        for row in self.scores.itertuples(index=False):
            cov = [getattr(row, f"coverage{int(100 * c)}") for c in INTERVALS]
            shown = "".join(f"{100 * v:7.1f}%" if np.isfinite(v) else f"{'—':>8}" for v in cov)
            nums = f"{row.points:8d}{row.nmse:9.3f}{row.mae:11.4g}{row.crps:11.4g}"
            lines.append(f"  {row.method:14}{row.channel:>14}{nums}{shown}")
        lines.append("  " + self.verdict())
        if self.in_sample:
            lines.append(
                f"  note: {self.in_sample} of these {self.series} series were used to train or validate the model: "
                "their scores are in-sample (optimistic); pass --unseen (Python: unseen_series) to score only the "
                "others"
            )
        return "\n".join(lines)

    def verdict(self) -> str:
        """Which forecast to use, by NMSE over all channels."""
        overall = self.scores[self.scores["channel"] == "all"].set_index("method")["nmse"]
        best = str(overall.idxmin())
        if best == "latent_ode":
            said = "the model beats both baselines on these series (NMSE)"
        else:
            said = (
                f"use {best.replace('_', ' ')} instead: NMSE {overall[best]:.3f} against the model's "
                f"{overall['latent_ode']:.3f} on these series"
            )
        ours = self.scores[(self.scores["channel"] == "all") & (self.scores["method"] == "latent_ode")].iloc[0]
        mae = self.scores[self.scores["channel"] == "all"].set_index("method")["mae"]
        if best == "latent_ode" and str(mae.idxmin()) != "latent_ode":
            other = str(mae.idxmin())
            said += f"; by MAE {other.replace('_', ' ')} is closer ({mae[other]:.4g} vs {mae['latent_ode']:.4g})"
        elif best != "latent_ode" and str(mae.idxmin()) == "latent_ode":  # a few large misses weigh on NMSE
            said += (
                f"; but by MAE the model is closer ({mae['latent_ode']:.4g} vs {mae[best]:.4g}): its errors are "
                "smaller as a rule and larger on a few points"
            )
        cov = float(ours["coverage80"])
        if np.isfinite(cov) and not 0.7 <= cov <= 0.9:
            said += f"; its 80% interval covers {100 * cov:.0f}% (too {'narrow' if cov < 0.7 else 'wide'})"
        return said

    def plot(
        self, path: str | Path, obs: pd.DataFrame, series: Sequence[str] | None = None, time_unit: str | None = None
    ) -> Path:
        """A fan chart of the held-out points: context observations (`obs` less the held-out rows), the
        point forecast, the 95% interval, LOCF (dashed) and the actuals."""
        from latentcast.fanchart import fan_chart

        fc = self.forecasts.drop(columns=["actual", "locf", "linear_trend"])
        actual = self.forecasts.pivot_table(index=["id", "time"], columns="channel", values="actual").reset_index()
        context, _ = split_series(obs, self.task)
        locf = self.forecasts[["id", "time", "channel", "locf"]]
        return fan_chart(context, fc, path, series=series, actuals=actual, time_unit=time_unit, baseline=locf)


BUILTIN = ("pbcseq", "physionet2012", "spirals")


def unseen_series(model: Model, obs: pd.DataFrame, id_col: str = "id") -> pd.DataFrame:
    """The rows of the series `model` was neither trained nor validated on (its checkpoint's fitted ids);
    a DataError when none is left, or when the checkpoint does not record them."""
    fitted = model.bundle.data.get("fitted_ids")
    if fitted is None:
        raise DataError(f"model {model.name!r} does not record the series it was fitted on: --unseen cannot tell")
    keep = obs[~obs[id_col].astype(str).isin(set(map(str, fitted)))]
    if keep.empty:
        raise DataError(
            f"every series of the table ({obs[id_col].nunique()}) was used to train or validate model {model.name!r}: "
            "no unseen series to score"
        )
    return keep


def builtin_table(name: str) -> pd.DataFrame:
    """The test split of a built-in data set ("pbcseq", "physionet2012[:PATH]", "spirals") as a long
    table in its own time unit: the series no embedded model was trained or chosen on."""
    from latentcast.models.training import build_experiment

    base = name.split(":", 1)[0]
    if base not in BUILTIN:
        raise DataError(f"{name!r}: not a built-in data set ({', '.join(BUILTIN)}) or a file")
    return split_table(build_experiment(base, None, data={"name": name} if ":" in name else {}).data)


def split_table(cfg: DataConfig, part: Literal["train", "val", "test"] = "test") -> pd.DataFrame:
    """One part of a data set's seeded split by series (the one training made from `cfg`) as a long table
    in its own time unit."""
    from latentcast.models.training import load_dataset

    split = load_dataset(cfg)
    frames = []
    for s in getattr(split, part):
        rows = pd.DataFrame(s.values.astype(np.float64), columns=list(split.channels))
        frames.append(rows.assign(id=s.id, time=s.times / split.time.scale))
    return pd.concat(frames, ignore_index=True)[["id", "time", *split.channels]]


def split_series(
    obs: pd.DataFrame, task: Task, id_col: str = "id", time_col: str = "time"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(context, held out) rows: per series with at least two rows, the last row (task "last") or the
    second half of its rows ("half") held out."""
    if task not in TASKS:
        raise DataError(f"task {task!r}: one of {', '.join(TASKS)}")
    key = parse_times(obs[time_col], f"column {time_col!r}").values
    frame = obs.assign(_t=key).sort_values([id_col, "_t"], kind="stable")
    rank = frame.groupby(id_col, sort=False).cumcount()
    size = frame.groupby(id_col, sort=False)[time_col].transform("size")
    cut = size - 1 if task == "last" else (size + 1) // 2
    held = (size >= 2) & (rank >= cut)
    return frame[~held].drop(columns="_t"), frame[held].drop(columns="_t")


def backtest(
    model: Model,
    obs: pd.DataFrame,
    task: Task = "last",
    id_col: str = "id",
    time_col: str = "time",
    on_chunk: Callable[[int, int], None] | None = None,
    chunk: int = 256,
    future_inputs: bool = True,
) -> Backtest:
    """Hold out the last point (or second half) of each series of `obs`, forecast it from the rest with
    `model`, and score it beside LOCF and a linear trend. `on_chunk(done, total)` reports progress.

    Points are rows that observe a channel. For a model with events (`models.inputs`), every event of a
    series is given with its context, those after the cut being the plan the forecast is asked under;
    `future_inputs=False` gives only those up to the last context observation."""
    channels = [c for c in model.channels if c in obs.columns]
    if not channels:
        raise DataError(f"none of the model's channels ({', '.join(model.channels)}) is a column of the table")
    spec = model.bundle.inputs
    inputs = [c for c in spec.columns if c in obs.columns]
    seen = obs[channels].notna().any(axis=1)
    context, held = split_series(obs.loc[seen, [id_col, time_col, *channels, *inputs]], task, id_col, time_col)
    if any(c in obs.columns for c in spec.events):  # events stay known: the past, and the plan unless told not
        events = obs.loc[obs[list(spec.events)].notna().any(axis=1), [id_col, time_col, *inputs]]
        if not future_inputs:
            last = context.groupby(id_col)[time_col].max()
            at = parse_times(events[time_col], time_col).values
            until = parse_times(events[id_col].map(last), time_col).values
            events = events[at <= until]
        context = pd.concat([context.drop(columns=list(spec.events)), events], ignore_index=True)
    if held.empty:
        raise DataError("no series has two or more rows: nothing to hold out")
    ids = list(dict.fromkeys(held[id_col]))
    parts = []
    for start in range(0, len(ids), chunk):
        part = set(ids[start : start + chunk])
        q = held[held[id_col].isin(part)][[id_col, time_col]]
        fc = model.predict(
            context[context[id_col].isin(part)],
            q,
            quantiles=LEVELS,
            id_col=id_col,
            time_col=time_col,
            on_error="skip",
            extra_columns="ignore",
        )
        parts.append(fc)
        if on_chunk is not None:
            on_chunk(min(start + chunk, len(ids)), len(ids))
    fc = pd.concat(parts, ignore_index=True)
    actual = held.melt([id_col, time_col], channels, "channel", "actual").dropna(subset=["actual"])
    base = _baselines(context, held, channels, id_col, time_col)
    keys = [id_col, "_k", "channel"]  # a series' time as a number: date-times come back as timestamps
    out = (
        _keyed(actual, id_col, time_col)
        .merge(_keyed(fc, id_col, time_col).drop(columns=time_col), on=keys)
        .merge(_keyed(base, id_col, time_col).drop(columns=time_col), on=keys)
        .dropna(subset=["locf"])
    )
    out = out.sort_values(keys, kind="stable").drop(columns="_k").reset_index(drop=True)
    fitted = set(model.bundle.data.get("fitted_ids") or ())
    in_sample = len(fitted & set(out[id_col])) if fitted else 0
    return Backtest(_scores(out, channels), out, task, out[id_col].nunique(), len(out), in_sample)


def _keyed(frame: pd.DataFrame, id_col: str, time_col: str) -> pd.DataFrame:
    return frame.assign(**{id_col: frame[id_col].astype(str), "_k": parse_times(frame[time_col], time_col).values})


def _baselines(
    context: pd.DataFrame, held: pd.DataFrame, channels: Sequence[str], id_col: str, time_col: str
) -> pd.DataFrame:
    """LOCF and a least-squares line through each series' context values of each channel (LOCF where
    fewer than two), at the held-out times; none where the context never saw the channel."""
    t_ctx = parse_times(context[time_col], time_col).values
    t_held = parse_times(held[time_col], time_col).values
    rows: list[dict[str, Any]] = []
    by_id = {k: np.flatnonzero(context[id_col].to_numpy() == k) for k in held[id_col].unique()}
    held_ids = held[id_col].to_numpy()
    for sid in held[id_col].unique():
        c, h = by_id[sid], np.flatnonzero(held_ids == sid)
        for ch in channels:
            x = context[ch].to_numpy(dtype=np.float64)[c]
            ok = ~np.isnan(x)
            if not ok.any():
                continue
            t = t_ctx[c][ok]
            locf = x[ok][-1]
            if ok.sum() >= 2 and np.ptp(t) > 0:
                slope, icpt = np.polyfit(t - t[-1], x[ok], 1)
                trend = icpt + slope * (t_held[h] - t[-1])
            else:
                trend = np.full(len(h), locf)
            for k, tr in zip(h, trend, strict=True):
                rows.append({id_col: str(sid), time_col: held[time_col].iloc[k], "channel": ch, "locf": locf,
                             "linear_trend": float(tr)})  # fmt: skip
    return pd.DataFrame(rows, columns=[id_col, time_col, "channel", "locf", "linear_trend"])


def _scores(out: pd.DataFrame, channels: Sequence[str]) -> pd.DataFrame:
    qcols = [quantile_column(lv) for lv in LEVELS]
    ends = {c: (quantile_column(round((1 - c) / 2, 3)), quantile_column(round((1 + c) / 2, 3))) for c in INTERVALS}
    rows = []
    for ch in channels:
        d = out[out["channel"] == ch]
        if d.empty:
            continue
        y = d["actual"].to_numpy(dtype=np.float64)
        var = float(np.var(y)) or 1.0
        quants = d[qcols].to_numpy(dtype=np.float64)
        for method in METHODS:
            point = d["point" if method == "latent_ode" else method].to_numpy(dtype=np.float64)
            err = point - y
            if method == "latent_ode":
                crps = float(np.mean(scoringrules.crps_quantile(y, quants, np.array(LEVELS), backend="numpy")))
                cover = {
                    f"coverage{int(100 * c)}": float(np.mean((y >= d[lo]) & (y <= d[hi])))
                    for c, (lo, hi) in ends.items()
                }
            else:
                crps = float(np.mean(np.abs(err)))  # a point forecast's CRPS is its absolute error
                cover = {f"coverage{int(100 * c)}": float("nan") for c in INTERVALS}
            rows.append(
                {"method": method, "channel": ch, "points": len(y), "nmse": float(np.mean(err**2)) / var,
                 "mae": float(np.mean(np.abs(err))), "crps": crps, **cover}
            )  # fmt: skip
    scores = pd.DataFrame(rows)
    covers = [f"coverage{int(100 * c)}" for c in INTERVALS]
    overall = scores.groupby("method", sort=False).agg(
        points=("points", "sum"), **{k: (k, "mean") for k in ("nmse", "mae", "crps")}
    )
    # coverage over all held-out points (a channel with few points does not weigh as much as one with many)
    weighted = scores[covers].mul(scores["points"], axis=0).groupby(scores["method"], sort=False).sum(min_count=1)
    overall[covers] = weighted.div(overall["points"], axis=0)
    overall = overall.reset_index().assign(channel="all")
    return pd.concat([scores, overall[scores.columns]], ignore_index=True)
