"""PNG fan charts from a client forecast table: observations, mean and the outermost quantile band."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from latentcast.frames import parse_times


def _axis_times(col: pd.Series) -> pd.Series:
    """Numbers as they are; date-times (strict ISO-8601 or datetime values) as UTC timestamps."""
    times = parse_times(col.reset_index(drop=True), "time")
    return times.as_column().set_axis(col.index) if times.is_datetime else col


def fan_chart(
    obs: pd.DataFrame,
    fc: pd.DataFrame,
    path: str | Path,
    max_series: int = 6,
    id_col: str = "id",
    time_col: str = "time",
) -> Path:
    """One row per series (first `max_series`), one column per channel."""
    path = Path(path)
    ids = list(dict.fromkeys(fc[id_col].astype(str)))[:max_series]
    channels = list(dict.fromkeys(fc["channel"]))
    qcols = sorted((c for c in fc.columns if c.startswith("q")), key=lambda c: float(c[1:]))
    fig, axes = plt.subplots(len(ids), len(channels), figsize=(3.4 * len(channels), 2.4 * len(ids)), squeeze=False)
    obs = obs.assign(**{id_col: obs[id_col].astype(str)})
    for i, sid in enumerate(ids):
        o = obs[obs[id_col] == sid].sort_values(time_col)
        f = fc[fc[id_col].astype(str) == sid]
        for j, ch in enumerate(channels):
            ax = axes[i][j]
            g = f[f["channel"] == ch].assign(_t=lambda d: _axis_times(d[time_col])).sort_values("_t")
            if len(qcols) >= 2:
                ax.fill_between(g["_t"], g[qcols[0]], g[qcols[-1]], alpha=0.25, label=f"{qcols[0][1:]}–{qcols[-1][1:]}")
            ax.plot(g["_t"], g["mean"], lw=1.5, label="mean")
            if ch in o.columns:
                ax.plot(_axis_times(o[time_col]), o[ch], "o", ms=3, color="C2", label="observed")
            ax.set_title(f"{sid} · {ch}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
