from __future__ import annotations

import numpy as np

from latentcast.models.data import Normalizer, Series
from latentcast.models.forecast import Forecaster
from latentcast.models.latent_ode import LatentODE
from latentcast.models.training.metrics import baseline_nmse, holdout_metrics
from tests.conftest import tiny_config


def _line(i: int, slope: float) -> Series:
    t = np.arange(5.0)
    v = np.stack([slope * t + i, np.full(5, float(i))], axis=1).astype(np.float32)
    return Series(id=f"l{i}", times=t, values=v)


def test_baselines_on_exact_lines() -> None:
    series = [_line(i, 2.0) for i in range(4)]
    norm = Normalizer(("a", "b"), (False, False), (0.0, 0.0), (1.0, 1.0))
    res = baseline_nmse(series, [4] * 4, norm)
    assert res["linear_trend"]["nmse"] < 1e-12  # a line is forecast exactly by its trend
    assert abs(res["locf"]["nmse_a"] - 4.0) < 1e-9  # LOCF misses by one slope: error² = 4
    assert res["locf"]["nmse_b"] == 0.0


def test_holdout_metrics_are_complete(series, normalizer) -> None:
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=8)
    m = holdout_metrics(fc, series)
    assert {"nmse", "nmse_a", "nmse_b", "nmse_c", "coverage80", "forecast_points"} <= set(m)
    assert 0 <= m["coverage80"] <= 1 and m["nmse"] > 0 and m["forecast_points"] == len(series)
    assert "rmse_truth" not in m  # no truth for real data


def test_rmse_against_truth_is_in_raw_units(series) -> None:
    from dataclasses import replace

    with_truth = [replace(s, truth=np.nan_to_num(s.values, nan=2.0) + 0.5) for s in series]
    for logs in ((), ("b",)):
        norm = Normalizer.fit(series, ("a", "b", "c"), logs)
        fc = Forecaster(LatentODE(tiny_config(), 3), norm, num_samples=8)
        m = holdout_metrics(fc, with_truth)
        raw = fc.predict(with_truth, [s.times[-1:] for s in with_truth], n_context=[len(s) - 1 for s in with_truth])
        want = np.sqrt(np.mean([(f.mean[0] - s.truth[-1]) ** 2 for f, s in zip(raw, with_truth, strict=True)]))
        assert abs(m["rmse_truth"] - want) < 1e-4 * want
