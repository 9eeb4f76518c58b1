"""The training schedule: likelihood weights per channel and batches pooled by length."""

from __future__ import annotations

import numpy as np

from latentcast.models.training.schedule import batch_indices, channel_weights
from tests.conftest import make_series


def test_channel_balance_gives_every_channel_an_equal_say_at_the_same_loss_scale() -> None:
    series = make_series(30, seed=5, missing=0.0)
    for s in series:
        s.values[:, 1][1:] = np.nan  # channel b: one value per series; channel c: never observed
        s.values[:, 2] = np.nan
    counts = np.array([sum(np.isfinite(s.values[:, d]).sum() for s in series) for d in range(3)])
    assert channel_weights(series, 0.0) is None
    w = channel_weights(series, 1.0)
    assert w is not None and w[2] == 0.0
    np.testing.assert_allclose(w[0] * counts[0], w[1] * counts[1])  # each channel's total weight equal
    np.testing.assert_allclose((w * counts).sum(), counts.sum())  # the mean weight per value is 1
    half = channel_weights(series, 0.5)
    assert half is not None and 1.0 < half[1] / half[0] < w[1] / w[0]


def test_length_pools_batch_similar_lengths_and_keep_every_series_once() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, 1000)
    order = rng.permutation(1000)
    plain = batch_indices(order, lengths, 32, 0, rng)
    pooled = batch_indices(order, lengths, 32, 8, np.random.default_rng(1))
    assert len(pooled) == len(plain) == 32  # as many steps, so DDP ranks stay in step
    np.testing.assert_array_equal(np.sort(np.concatenate(pooled)), np.arange(1000))
    padding = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)  # noqa: E731
    assert padding(pooled) < 0.3 * padding(plain)
    firsts = [int(b[0]) for b in pooled]
    assert firsts != sorted(firsts, key=lambda i: lengths[i])  # batches are not in length order
