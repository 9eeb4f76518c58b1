"""Choices made from the training split: time scale, log channels, entry errors; and the residual
decoder's level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentcast.models.data import Normalizer, Series, collate
from latentcast.models.latent_ode import LatentODE
from latentcast.models.training.preprocess import TARGET_SPAN, auto_log_channels, auto_time_scale, drop_outliers
from tests.conftest import tiny_config


def _series(times: list[float], values: list[list[float]], sid: str = "s") -> Series:
    return Series(sid, np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float32))


def test_the_time_scale_puts_the_median_span_at_the_target() -> None:
    series = [_series([0.0, span], [[1.0], [1.0]], f"s{k}") for k, span in enumerate((100.0, 200.0, 400.0))]
    series.append(_series([5.0], [[1.0]], "single"))  # one point: no span, not counted
    assert auto_time_scale(series) == pytest.approx(TARGET_SPAN / 200.0)
    negative = [_series([-1273.0, 0.0, 7000.0], [[1.0]] * 3)]  # days before and after a baseline
    assert auto_time_scale(negative) == pytest.approx(TARGET_SPAN / 8273.0)


def test_log_channels_are_the_positive_right_skewed_ones() -> None:
    rng = np.random.default_rng(0)
    skewed = rng.lognormal(0.0, 1.0, 400)
    symmetric = rng.normal(10.0, 1.0, 400)
    signed = rng.lognormal(0.0, 1.0, 400) - 0.5  # skewed but not positive
    values = np.stack([skewed, symmetric, signed], axis=1)
    series = [_series(list(range(400)), values.tolist())]
    assert auto_log_channels(series, ("skewed", "symmetric", "signed")) == ("skewed",)


def test_gross_outliers_become_not_observed_and_are_counted() -> None:
    rows = [[120.0 + k % 7, 80.0] for k in range(50)]
    rows[10][0] = 13_682.0
    series = [_series(list(range(50)), rows)]
    robust = Normalizer.fit(series, ("sys", "dia"), method="robust")
    standard = Normalizer.fit(series, ("sys", "dia"), method="standard")
    assert abs(robust.mean[0] - 123.0) < 1.0 and standard.mean[0] > 390.0  # one typo moves the mean, not the median
    clean = drop_outliers(series, robust, 10.0)
    assert clean.outliers == {"sys": 1, "dia": 0}
    assert np.isnan(clean.series[0].values[10, 0]) and clean.series[0].values[10, 1] == 80.0
    assert drop_outliers(series, robust, 0.0).outliers == {"sys": 0, "dia": 0}  # 0 keeps everything


def test_a_residual_decoder_that_predicts_no_change_is_locf(series, normalizer) -> None:
    model = LatentODE(tiny_config(anchor="last", residual="level", decoder_hidden=0), 3).eval()
    with torch.no_grad():
        for p in model.decoder.net.parameters():  # a decoder whose trajectory is flat zero: "no change"
            p.zero_()
    batch = collate(series, normalizer)
    level = batch.last_observed()
    for i, s in enumerate(series):  # each channel's last observed value in the context, or 0
        x = normalizer.transform(s.values)
        for j in range(3):
            seen = np.flatnonzero(~np.isnan(x[:, j]))
            want = x[seen[-1], j] if seen.size else 0.0
            assert float(level[i, j]) == pytest.approx(float(want), abs=1e-6)
    query = torch.full((len(series), 2), 0.7)
    pred = model.predict(batch, query, num_samples=4, levels=(0.5,))
    torch.testing.assert_close(pred.mean, level[:, None, :].expand_as(pred.mean), rtol=0, atol=1e-5)
