"""Noisy 2-D spirals: the generator of torchdiffeq's examples/latent_ode.py (`generate_spiral2d`).

500 points over θ ∈ [0, 6π]; counter-clockwise r = a + bθ centred at (+5, 0), clockwise r = a + 50b/z
with z = 6π + 1 - θ centred at (-5, 0); a = 0, b = 0.3; the direction is drawn with probability ½ and
Gaussian noise σ = 0.3 is added. Each series is a window of 200 consecutive points (start index uniform
over the example's 300 choices, without its +100 offset so that 200 points fit); times start at 0 with
the example's spacing 6π/499. The first 100 points are the observation window, subsampled without
replacement to n ∈ `n_obs` points; the next 100 are the prediction window, kept whole.
"""

from __future__ import annotations

import numpy as np

from latentcast.models.config import DataConfig
from latentcast.models.data import Series, TimeSpec, split_ids
from latentcast.models.training.datasets.base import DatasetSplit, split_series

N_TOTAL, WINDOW, OBS_WINDOW, STOP = 500, 200, 100, 6 * np.pi
A, B = 0.0, 0.3
TIME = TimeSpec(unit="unitless", scale=1.0)


def spiral_trajectories() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free (500,) times and (500, 2) clockwise and counter-clockwise trajectories."""
    ts = np.linspace(0.0, STOP, N_TOTAL)
    zs_cw = STOP + 1.0 - ts
    rs_cw = A + B * 50.0 / zs_cw
    cw = np.stack([rs_cw * np.cos(zs_cw) - 5.0, rs_cw * np.sin(zs_cw)], axis=1)
    rs_cc = A + B * ts
    cc = np.stack([rs_cc * np.cos(ts) + 5.0, rs_cc * np.sin(ts)], axis=1)
    return ts, cw, cc


def spiral_windows(n: int, noise_std: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n windows: times (200,), noisy (n, 200, 2), truth (n, 200, 2), counter-clockwise flags (n,)."""
    ts, cw, cc = spiral_trajectories()
    rng = np.random.default_rng([seed, 0])
    starts = rng.integers(0, N_TOTAL - 2 * OBS_WINDOW, size=n)  # 300 choices, as in the example
    ccw = rng.random(n) > 0.5
    truth = np.stack([(cc if c else cw)[s : s + WINDOW] for s, c in zip(starts, ccw, strict=True)])
    noisy = truth + rng.standard_normal(truth.shape) * noise_std
    return ts[:WINDOW] - ts[0], noisy, truth, ccw


def make_spirals(n: int, n_obs: tuple[int, ...], noise_std: float = 0.3, seed: int = 0) -> list[Series]:
    """Series with n_context = n observed points from the observation window + the 100-point prediction
    window. Windows and noise depend only on `seed`; the subsample on (`seed`, `n_obs`)."""
    if not n_obs or not all(1 <= k <= OBS_WINDOW for k in n_obs):
        raise ValueError(f"n_obs must be in [1, {OBS_WINDOW}], got {n_obs}")
    times, noisy, truth, _ = spiral_windows(n, noise_std, seed)
    rng = np.random.default_rng([seed, 1, *n_obs])
    out = []
    for i in range(n):
        k = int(rng.choice(n_obs))
        obs = np.sort(rng.choice(OBS_WINDOW, size=k, replace=False))
        idx = np.concatenate([obs, np.arange(OBS_WINDOW, WINDOW)])
        out.append(
            Series(
                id=f"spiral-{i:05d}",
                times=times[idx].astype(np.float64),
                values=noisy[i, idx].astype(np.float32),
                truth=truth[i, idx].astype(np.float32),
                n_context=k,
            )
        )
    return out


def load_spirals(cfg: DataConfig) -> DatasetSplit:
    series = make_spirals(cfg.n_series, tuple(cfg.n_obs), cfg.noise_std, cfg.split_seed)
    ids = split_ids([s.id for s in series], cfg.split, cfg.split_seed)
    return split_series(
        series,
        ids,
        ("x", "y"),
        (),
        TIME,
        {
            "name": "spirals",
            "source": "torchdiffeq examples/latent_ode.py generator",
            "series": len(series),
            "n_obs": list(cfg.n_obs),
            "noise_std": cfg.noise_std,
            "window": WINDOW,
        },
    )
