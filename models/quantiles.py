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
    means: torch.Tensor,
    std: torch.Tensor | None,
    levels: Sequence[float],
    iters: int = 40,
    tol: float = 1e-5,
    chunk: int | None = None,
) -> torch.Tensor:
    """Quantiles of the equal-weight mixture Σ_s N(means[s], std²) / S, elementwise.

    means: (S, …); std: broadcastable to means[0], or None for the samples' own empirical quantiles.
    Returns (len(levels), …). Safeguarded Halley iteration on the mixture CDF: it starts from the
    moment-matched Gaussian, keeps a bracket given by the components' own quantiles, and bisects whenever
    a step would leave it, until every CDF is within `tol` of its level. Halley's step uses the density's
    slope, so it costs no transcendental beyond the density's own exp, and converges cubically (flat,
    multimodal mixtures take up to `iters` bisections). Elements are processed `chunk` at a time, sized
    per device so the (levels × samples × chunk) temporaries stay near a budget (3 · 2^16 values on a
    CPU, 2^25 on a GPU; why: bench/results/optimizations.md, "Mixture quantiles"). Chunking moves a
    result only within the tolerance. Results are made monotone in the level.
    """
    if not levels:
        return means.new_zeros((0, *means.shape[1:]))
    lv = torch.as_tensor(list(levels), dtype=means.dtype, device=means.device)
    if std is None:
        return torch.quantile(means, lv, dim=0)
    shape = means.shape[1:]
    flat = means.reshape(means.shape[0], -1)  # (S, N)
    sd = std.expand(shape).reshape(-1)  # (N,)
    z = torch.special.ndtri(lv)[:, None]  # (nq, 1)
    tol = max(tol, 8 * torch.finfo(means.dtype).eps)
    out = flat.new_empty(len(levels), flat.shape[1])
    if chunk is None:
        cuda = means.device.type == "cuda"
        budget = (1 << 25) if cuda else 3 << 16  # values per (levels, samples, chunk) temporary
        chunk = max(4096 if cuda else 256, budget // (len(levels) * means.shape[0]))
    for c in range(0, flat.shape[1], chunk):
        m, s = flat[:, c : c + chunk], sd[c : c + chunk]
        lo = m.amin(0)[None] + z * s - 1e-6 * s  # the mixture quantile lies between its components' ones
        hi = m.amax(0)[None] + z * s + 1e-6 * s
        mu = m.mean(0)
        var = (m - mu).square_().mean(0)  # written out: torch.var over dim 0 is slow on a CPU
        x = (mu[None] + z * (s**2 + var).sqrt()).clamp(min=lo, max=hi)
        out[:, c : c + chunk] = _halley(m, s, x, lo, hi, lv[:, None], iters, tol)
    order = torch.argsort(lv)
    x_sorted = torch.cummax(out[order], dim=0).values
    return torch.empty_like(out).index_copy_(0, order, x_sorted).view(len(levels), *shape)


_LOG2E = 1.4426950408889634


def _halley(
    means: torch.Tensor,
    sd: torch.Tensor,
    x: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    target: torch.Tensor,
    iters: int,
    tol: float,
) -> torch.Tensor:
    """Safeguarded Halley for the mixture CDF F(x) = target. means (S, N), sd (N,), x/lo/hi (Q, N),
    target (Q, 1). With e = F - target, f = F' and f' = F'': Halley's step is Newton's e/f divided by
    1 - t, t = e f' / (2f²). Where that factor leaves [½, 2] (far from the root, e.g. on a flat stretch
    between modes, where Halley's steps shrink to nothing) the Newton step is taken instead, and a step
    that leaves the bracket is replaced by bisection."""
    k = 0.7071067811865476 / sd  # (N,) 1/(σ√2): Φ((x-μ)/σ) = ½ + ½ erf((x-μ)k)
    scaled = means * k  # (S, N)
    dens = k * 0.5641895835477563  # 1/(σ√(2π)) = k/√π
    for _ in range(iters):
        u = (x * k)[:, None] - scaled[None]  # (Q, S, N)
        cdf = 0.5 + 0.5 * torch.erf(u).mean(1)
        err = cdf - target
        done = err.abs() < tol
        if bool(done.all()):
            break
        g = torch.exp2(u.square().mul_(-_LOG2E))  # exp(-u²) through exp2, the faster of the two on a CPU
        pdf = (g.mean(1) * dens).clamp(min=1e-30)
        slope = g.mul_(u).mean(1) * (-2.0 * dens * k)  # d pdf / dx
        below = err < 0
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        newton = err / pdf
        t = newton * slope / (2.0 * pdf)
        cand = x - torch.where((t >= -1.0) & (t <= 0.5), newton / (1.0 - t), newton)
        step = torch.where((cand >= lo) & (cand <= hi), cand, 0.5 * (lo + hi))
        x = torch.where(done, x, step)
    return x
