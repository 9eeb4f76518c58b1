"""PNG fan charts: observations, truth where known, predicted mean and 10–90% band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.data import Series
from latentcast.models.forecast import Forecaster
from latentcast.models.training.metrics import forecast_contexts


def plot_validation(
    path: str | Path,
    bundle: ModelBundle,
    series: Sequence[Series],
    device: torch.device | str = "cpu",
    max_channels: int = 4,
    points: int = 200,
) -> Path:
    """One row per series, one column per channel (first `max_channels`): context observations (dots),
    held-out observations (crosses), truth (dashed), predicted mean and 10–90% band conditioned on the
    context only, over the series' whole span."""
    path = Path(path)
    series = list(series)
    if not series:
        return path
    contexts = forecast_contexts(series)
    # the RNN baseline cannot look back: its curves start at the end of the context
    starts = [
        s.times[c - 1] if bundle.config.kind == "rnn" else s.times[0] for s, c in zip(series, contexts, strict=True)
    ]
    grids = [np.linspace(t0, s.times[-1], points) for t0, s in zip(starts, series, strict=True)]
    fc = Forecaster.from_bundle(bundle, device).predict(series, grids, levels=(0.1, 0.9), n_context=contexts)
    channels = bundle.channels[:max_channels]
    fig, axes = plt.subplots(
        len(series), len(channels), figsize=(3.2 * len(channels), 2.4 * len(series)), squeeze=False
    )
    scale, unit = bundle.time.scale, bundle.time.unit  # drawn in the data's unit, not model time
    for i, (s, c, f) in enumerate(zip(series, contexts, fc, strict=True)):
        t, tf = s.times / scale, f.times / scale
        for j, name in enumerate(channels):
            ax = axes[i][j]
            ax.fill_between(tf, f.quantiles[0.1][:, j], f.quantiles[0.9][:, j], alpha=0.25, label="10–90%")
            ax.plot(tf, f.point[:, j], lw=1.5, label="point")
            if s.truth is not None:
                ax.plot(t, s.truth[:, j], "k--", lw=0.8, label="truth")
            ax.plot(t[:c], s.values[:c, j], "o", ms=2.5, color="C2", label="observed")
            ax.plot(t[c:], s.values[c:, j], "x", ms=3, color="C3", label="held out")
            ax.set_title(f"{s.id} · {name}", fontsize=8)
            ax.set_xlabel(unit if unit != "unitless" else "time", fontsize=7)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
