"""PNG fan charts from a client forecast table: observations, the forecast and its outermost quantile
band, and the actual values where they are known."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from latentcast.frames import DataError, parse_times


def _axis_times(col: pd.Series) -> pd.Series:
    """Numbers as they are; date-times (strict ISO-8601 or datetime values) as UTC timestamps."""
    times = parse_times(col.reset_index(drop=True), "time")
    return times.as_column().set_axis(col.index) if times.is_datetime else col


def chosen_series(fc: pd.DataFrame, series: Sequence[str] | None, max_series: int, id_col: str = "id") -> list[str]:
    """The series to draw: those named (each must be in the forecast), else the first `max_series`."""
    ids = list(dict.fromkeys(fc[id_col].astype(str)))
    if series is None:
        return ids[:max_series]
    missing = [s for s in series if s not in set(ids)]
    if missing:
        raise DataError(f"series {missing[:3]} are not in the forecast (it has {len(ids)}: {ids[:3]}…)")
    return list(dict.fromkeys(series))


def fan_chart(
    obs: pd.DataFrame,
    fc: pd.DataFrame,
    path: str | Path,
    max_series: int = 6,
    id_col: str = "id",
    time_col: str = "time",
    series: Sequence[str] | None = None,
    actuals: pd.DataFrame | None = None,
    time_unit: str | None = None,
    point: str = "point",
    baseline: pd.DataFrame | None = None,
) -> Path:
    """One row per series (`series`, or the first `max_series`), one column per channel: the observations,
    the `point` forecast with the outermost quantile band (a lone query time: a point with its interval),
    and `actuals` (a long table like `obs`, e.g. held-out values at the query times) where given, and a
    `baseline` forecast (id, time, channel, and one column of values named for the legend, e.g. "locf"). The
    x axis, shared by a series' channels, is labelled with `time_unit` when known (a table without a
    `point` column: its `mean`)."""
    path = Path(path)
    point = point if point in fc.columns else "mean"
    ids = chosen_series(fc, series, max_series, id_col)
    channels = list(dict.fromkeys(fc["channel"]))
    qcols = sorted((c for c in fc.columns if c.startswith("q") and c[1:2].isdigit()), key=lambda c: float(c[1:]))
    size = (3.4 * len(channels), 2.4 * len(ids))  # a series' channels share its time axis
    fig, axes = plt.subplots(len(ids), len(channels), figsize=size, squeeze=False, sharex="row")
    obs = obs.assign(**{id_col: obs[id_col].astype(str)})
    if actuals is not None:
        actuals = actuals.assign(**{id_col: actuals[id_col].astype(str)})
    band = f"{qcols[0][1:]}–{qcols[-1][1:]}" if len(qcols) >= 2 else ""
    for i, sid in enumerate(ids):
        o = obs[obs[id_col] == sid].sort_values(time_col)
        f = fc[fc[id_col].astype(str) == sid]
        for j, ch in enumerate(channels):
            ax = axes[i][j]
            g = f[f["channel"] == ch].assign(_t=lambda d: _axis_times(d[time_col])).sort_values("_t")
            if len(g) == 1:  # a lone query time: its point and interval
                row = g.iloc[0]
                err = [[max(row[point] - row[qcols[0]], 0)], [max(row[qcols[-1]] - row[point], 0)]] if band else None
                ax.errorbar(g["_t"], g[point], yerr=err, fmt="s", ms=4, capsize=3, label=f"{point}, {band}")
            else:
                if band:
                    ax.fill_between(g["_t"], g[qcols[0]], g[qcols[-1]], alpha=0.25, label=band)
                ax.plot(g["_t"], g[point], lw=1.5, marker=".", ms=3, label=point)
            if ch in o.columns:
                ax.plot(_axis_times(o[time_col]), o[ch], "o", ms=3, color="C2", label="observed")
            if baseline is not None:
                b = baseline[(baseline[id_col].astype(str) == sid) & (baseline["channel"] == ch)]
                name = next(c for c in baseline.columns if c not in (id_col, time_col, "channel"))
                b = b.assign(_t=lambda d: _axis_times(d[time_col])).sort_values("_t")
                ax.plot(
                    b["_t"], b[name], "--", marker="_", ms=9, lw=1, color="0.45", label=name.replace("_", " ").upper()
                )
            if actuals is not None and ch in actuals.columns:
                a = actuals[actuals[id_col] == sid].dropna(subset=[ch])
                ax.plot(_axis_times(a[time_col]), a[ch], "x", ms=5, color="C3", label="actual")
            ax.set_title(f"{sid} · {ch}", fontsize=8)
            if g.empty and not (ch in o.columns and o[ch].notna().any()):
                ax.text(0.5, 0.5, f"no {ch} in this series", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes, color="0.4")  # fmt: skip
                ax.set_yticks([])
            if time_unit:
                ax.set_xlabel(time_unit, fontsize=7)
            # every row keeps its own tick labels (rows are different series, with their own time ranges)
            ax.tick_params(labelsize=7, labelbottom=True)
            if pd.api.types.is_datetime64_any_dtype(g["_t"]):
                plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
