from __future__ import annotations

import numpy as np
import pytest
import torch

from latentcast.models.data import collate
from latentcast.models.forecast import Forecaster, per_series
from latentcast.models.latent_ode import LatentODE
from latentcast.models.packed import PackedSeries
from tests.conftest import make_series, tiny_config


def _queries(series, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [s.times[-1] + rng.uniform(-3, 3, int(rng.integers(1, 6))) for s in series]


@pytest.mark.parametrize("anchor", ["first", "last"])
def test_context_batch_pads_like_collate(series, normalizer, anchor: str) -> None:
    packed = PackedSeries.from_series(series, _queries(series))
    got = packed.context_batch(normalizer, anchor)
    want = collate(series, normalizer, anchor=anchor)
    for name in ("ctx_t", "ctx_x", "ctx_m", "ctx_len", "anchor"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0, msg=name)
    assert got.ids == want.ids


def test_padded_queries_repeat_each_rows_last_query(series) -> None:
    qs = _queries(series)
    packed = PackedSeries.from_series(series, qs)
    anchors = packed.anchors("first")
    rel, row, col = packed.padded_queries(anchors)
    assert rel.shape == (len(series), max(map(len, qs)))
    for i, q in enumerate(qs):
        np.testing.assert_array_equal(rel[i, : len(q)], q - anchors[i])
        assert (rel[i, len(q) :] == q[-1] - anchors[i]).all()
    np.testing.assert_array_equal(rel[row, col], packed.queries - np.repeat(anchors, [len(q) for q in qs]))


def test_take_concat_and_context_truncation(series) -> None:
    qs = _queries(series)
    packed = PackedSeries.from_series(series, qs)
    back = PackedSeries.concat([packed.take(0, 2), packed.take(2, 3), packed.take(3, len(series))])
    for a, b in zip(
        (back.times, back.values, back.offsets, back.queries, back.query_offsets),
        (packed.times, packed.values, packed.offsets, packed.queries, packed.query_offsets),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert back.ids == packed.ids
    short = PackedSeries.from_series(series, qs, n_context=[1] * len(series))
    np.testing.assert_array_equal(short.times, [s.times[0] for s in series])
    with pytest.raises(ValueError, match="context length"):
        PackedSeries.from_series(series[:1], qs[:1], n_context=[len(series[0]) + 1])
    with pytest.raises(ValueError, match="offsets"):
        PackedSeries(["a"], packed.times, packed.values, packed.offsets, packed.queries, packed.query_offsets)


def test_packed_forecast_splits_like_separate_requests(normalizer) -> None:
    series = make_series(7, seed=3)
    qs = _queries(series, seed=1)
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=4, batch_size=3)
    whole = fc.predict_packed(PackedSeries.from_series(series, qs), levels=(0.1, 0.9), return_samples=True)
    assert whole.mean.shape == (sum(map(len, qs)), 3) and whole.quantiles.shape == (2, len(whole.times), 3)
    parts = whole.split([2, 5])
    alone = fc.predict_packed(PackedSeries.from_series(series[2:], qs[2:]), levels=(0.1, 0.9), return_samples=True)
    np.testing.assert_allclose(parts[1].mean, alone.mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(parts[1].quantiles, alone.quantiles, rtol=1e-4, atol=1e-6)
    assert parts[1].samples is not None and alone.samples is not None
    np.testing.assert_allclose(parts[1].samples, alone.samples, rtol=1e-4, atol=1e-6)
    one = per_series(parts[0])
    assert [f.id for f in one] == ["s0", "s1"]
    np.testing.assert_array_equal(one[1].times, qs[1])
    np.testing.assert_array_equal(one[1].quantiles[0.9], whole.quantiles[1, len(qs[0]) : len(qs[0]) + len(qs[1])])
    with pytest.raises(ValueError, match="zero series"):
        fc.predict_packed(PackedSeries.from_series([], []))


def test_selected_series_are_copied_in_c_order_for_the_writers(normalizer) -> None:
    """A request that skips a refused series answers the rest: orjson writes only C-ordered arrays."""
    import orjson

    series = make_series(4, seed=5)
    qs = _queries(series, seed=2)
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=4)
    whole = fc.predict_packed(PackedSeries.from_series(series, qs), levels=(0.1, 0.9), return_samples=True)
    kept = whole.select(np.array([0, 2, 3]))
    arrays = [kept.point, kept.mean, kept.quantiles, kept.samples, kept.times]
    assert all(a is not None and a.flags.c_contiguous for a in arrays)
    a, z = kept.query_offsets[1:3]
    np.testing.assert_array_equal(
        kept.quantiles[1, a:z], whole.quantiles[1, whole.query_offsets[2] : whole.query_offsets[3]]
    )
    orjson.dumps({"q": kept.quantiles[1, a:z], "mean": kept.mean[a:z]}, option=orjson.OPT_SERIALIZE_NUMPY)
