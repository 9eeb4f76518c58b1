"""Predictive quantiles from latent samples: exact quantiles of the Gaussian mixture they define."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch.quasirandom import SobolEngine


@functools.lru_cache(maxsize=64)
def standard_normal_draws(n: int, dim: int) -> torch.Tensor:
    """(n, dim) scrambled-Sobol standard normal draws with a fixed seed (CPU, float64).

    The same draws serve every series (common random numbers): a series' samples do not depend on
    what else is in the batch, and quasi-random points give steadier quantiles than pseudo-random.
    """
    u = SobolEngine(dim, scramble=True, seed=0).draw(n, dtype=torch.float64)
    return torch.special.ndtri(u.clamp(1e-9, 1 - 1e-9))


def mixture_quantiles(
    means: torch.Tensor, std: torch.Tensor | None, levels: Sequence[float], iters: int = 30
) -> torch.Tensor:
    """Quantiles of the equal-weight mixture Σ_s N(means[s], std²) / S, elementwise.

    means: (S, …); std: broadcastable to means[0], or None for the samples' own empirical quantiles.
    Returns (len(levels), …). Bisection on the mixture CDF inside the bracket given by the components'
    own quantiles, so results are monotone in the level.
    """
    if not levels:
        return means.new_zeros((0, *means.shape[1:]))
    lv = torch.as_tensor(list(levels), dtype=means.dtype, device=means.device)
    if std is None:
        return torch.quantile(means, lv, dim=0)
    std = std.expand_as(means[0])
    tail = [1] * (means.ndim - 1)
    z = torch.special.ndtri(lv).view(-1, 1, *tail)  # (nq, 1, 1…)
    comp = means[None] + z * std  # (nq, S, …): each component's own quantile brackets the mixture's
    lo = comp.amin(1) - 1e-6 * std
    hi = comp.amax(1) + 1e-6 * std
    target = lv.view(-1, *tail)  # (nq, 1…)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        cdf = torch.special.ndtr((mid[:, None] - means[None]) / std).mean(1)  # (nq, …)
        below = cdf < target
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)
