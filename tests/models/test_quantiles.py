from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcast.models.quantiles import mixture_quantiles, standard_normal_draws


def test_single_component_gives_gaussian_quantiles() -> None:
    means = torch.tensor([[1.0, -2.0]], dtype=torch.float64)  # (S=1, 2)
    std = torch.tensor([0.5, 2.0], dtype=torch.float64)
    q = mixture_quantiles(means, std, (0.1, 0.5, 0.9))
    z = 1.2815515655446004
    torch.testing.assert_close(q[:, 0], torch.tensor([1 - 0.5 * z, 1.0, 1 + 0.5 * z], dtype=torch.float64))
    torch.testing.assert_close(q[:, 1], torch.tensor([-2 - 2 * z, -2.0, -2 + 2 * z], dtype=torch.float64))


def test_symmetric_two_component_mixture_median_is_the_centre() -> None:
    means = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    q = mixture_quantiles(means, torch.tensor([0.3], dtype=torch.float64), (0.5, 0.75))
    assert abs(float(q[0, 0])) < 1e-7
    # P(X <= x) = ½[Φ((x+1)/.3) + Φ((x-1)/.3)] = 0.75 → x = 1 (since Φ(2/.3) ≈ 1)
    assert abs(float(q[1, 0]) - 1.0) < 1e-6


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=8), st.floats(0.01, 3.0))
def test_mixture_quantiles_are_monotone_and_hit_their_level(mus: list[float], sigma: float) -> None:
    means = torch.tensor(mus, dtype=torch.float64)[:, None]
    std = torch.tensor([sigma], dtype=torch.float64)
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    q = mixture_quantiles(means, std, levels)
    assert (q[1:] >= q[:-1]).all()
    cdf = torch.special.ndtr((q[:, None, 0] - means[None, :, 0]) / sigma).mean(1)
    torch.testing.assert_close(cdf, torch.tensor(levels, dtype=torch.float64), atol=1e-5, rtol=0)


def test_no_noise_gives_sample_quantiles() -> None:
    means = torch.arange(5.0)[:, None]
    q = mixture_quantiles(means, None, (0.5,))
    assert float(q[0, 0]) == 2.0


@pytest.mark.parametrize("n", [16, 64])
def test_latent_draws_are_fixed_and_roughly_standard(n: int) -> None:
    a, b = standard_normal_draws(n, 6), standard_normal_draws(n, 6)
    assert torch.equal(a, b) and a.shape == (n, 6)
    assert abs(float(a.mean())) < 0.15 and abs(float(a.std()) - 1) < 0.15
    assert not math.isnan(float(a.sum()))


def test_chunking_changes_quantiles_only_within_the_tolerance() -> None:
    """Chunks change only the memory layout; the last bits of a reduction may differ, so an element may
    stop one iteration earlier or later: its CDF stays within tol = 1e-5 of the level."""
    g = torch.Generator().manual_seed(3)
    means = torch.randn(16, 5, 7, 3, generator=g) * torch.rand(1, 5, 7, 3, generator=g) * 3
    std = torch.rand(3, generator=g) + 0.05
    levels = (0.9, 0.1, 0.5)
    ref = mixture_quantiles(means, std, levels, chunk=10**6)
    for chunk in (1, 7, 64, None):
        torch.testing.assert_close(mixture_quantiles(means, std, levels, chunk=chunk), ref, rtol=1e-4, atol=1e-4)


def test_quantile_between_narrow_modes_converges() -> None:
    """A level that falls where the CDF is flat between narrow modes (found by hypothesis): Halley's steps
    shrink to nothing there, so the iteration must fall back to Newton and bisection."""
    means = torch.tensor([0.0, 0.0, 3.375, -0.40625], dtype=torch.float64)[:, None]
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    q = mixture_quantiles(means, torch.tensor([0.01], dtype=torch.float64), levels)
    cdf = torch.special.ndtr((q[:, None, 0] - means[None, :, 0]) / 0.01).mean(1)
    torch.testing.assert_close(cdf, torch.tensor(levels, dtype=torch.float64), atol=1e-5, rtol=0)
