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
    means: torch.Tensor, std: torch.Tensor | None, levels: Sequence[float], iters: int = 40, tol: float = 1e-7
) -> torch.Tensor:
    """Quantiles of the equal-weight mixture Σ_s N(means[s], std²) / S, elementwise.

    means: (S, …); std: broadcastable to means[0], or None for the samples' own empirical quantiles.
    Returns (len(levels), …). Safeguarded Newton on the mixture CDF: it starts from the moment-matched
    Gaussian, keeps a bracket given by the components' own quantiles, and bisects whenever a Newton step
    would leave it; it stops once every CDF is within `tol` of its level. Results are made monotone in
    the level.
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
    total_sd = (std**2 + means.var(0, unbiased=False)).sqrt()
    x = (means.mean(0)[None] + z[:, 0] * total_sd).clamp(min=lo, max=hi)  # (nq, …)
    inv = 1.0 / std
    tol = max(tol, 8 * torch.finfo(means.dtype).eps)  # float32 CDFs cannot resolve 1e-7
    for _ in range(iters):
        u = (x[:, None] - means[None]) * inv  # (nq, S, …)
        cdf = torch.special.ndtr(u).mean(1)
        pdf = torch.exp(-0.5 * u * u).mean(1) * (inv * 0.3989422804014327)
        err = cdf - target
        below = err < 0
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        done = err.abs() < tol
        if bool(done.all()):
            break
        newton = x - err / pdf.clamp(min=1e-30)
        step = torch.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
        x = torch.where(done, x, step)
    order = torch.argsort(lv)
    x_sorted = torch.cummax(x[order], dim=0).values
    return torch.empty_like(x).index_copy_(0, order, x_sorted)
