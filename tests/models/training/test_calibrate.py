from __future__ import annotations

import numpy as np
import pytest
import torch

from latentcast.models.data import Series
from latentcast.models.forecast import Forecaster
from latentcast.models.latent_ode import LatentODE
from latentcast.models.training.calibrate import (
    MIN_VALUES,
    PERSISTENCE_GRID,
    HeldOut,
    fit_calibration,
    fit_persistence,
    forecast_tasks,
    held_out,
)
from tests.conftest import make_series, tiny_config


def test_a_query_at_a_channels_last_value_returns_it_and_far_ones_the_model(series, normalizer) -> None:
    """With persistence, the forecast at a channel's last observed time is that value (the mean in the
    model's units: on the data's scale, and in log space for a logged channel); far from it, the
    model's own forecast; the spread about the mean is the model's everywhere."""
    model = LatentODE(tiny_config(), 3)
    plain = Forecaster(model, normalizer, num_samples=16)
    held = Forecaster(model, normalizer, num_samples=16, persistence=(0.5, 0.5, 0.0))
    s = series[0]
    last_row = {j: int(np.flatnonzero(~np.isnan(s.values[:, j]))[-1]) for j in range(3)}
    for j in (0, 1):  # a (plain) and b (logged)
        t = s.times[last_row[j]]
        got = held.predict([s], [np.array([t])], normalized=True)[0]
        want = normalizer.transform(s.values[last_row[j] : last_row[j] + 1])[0, j]
        assert got.mean[0, j] == pytest.approx(float(want), abs=1e-5)
    raw = held.predict([s], [np.array([s.times[last_row[0]]])])[0]
    assert raw.mean[0, 0] == pytest.approx(float(s.values[last_row[0], 0]), rel=1e-5)
    far = np.array([s.times[-1] + 200.0])
    a = plain.predict([s], [far], levels=(0.1, 0.9), normalized=True)[0]
    b = held.predict([s], [far], levels=(0.1, 0.9), normalized=True)[0]
    np.testing.assert_allclose(b.mean, a.mean, atol=1e-5)
    near = np.array([s.times[-1] + 0.2])
    a = plain.predict([s], [near], levels=(0.1, 0.9), normalized=True)[0]
    b = held.predict([s], [near], levels=(0.1, 0.9), normalized=True)[0]
    np.testing.assert_allclose(b.quantiles[0.9] - b.quantiles[0.1], a.quantiles[0.9] - a.quantiles[0.1], atol=1e-5)
    np.testing.assert_allclose(b.mean[:, 2], a.mean[:, 2], atol=1e-6)  # channel c: τ 0, untouched


def test_held_out_arrays_shift_as_the_forecaster_does(normalizer) -> None:
    """`HeldOut.held` (what the fit scores) equals a forecaster run with the same time scales."""
    model = LatentODE(tiny_config(), 3)
    series = make_series(8, seed=3)
    taus = (0.3, 0.0, 1.0)
    plain = held_out(Forecaster(model, normalizer, num_samples=8), series)
    with_p = held_out(Forecaster(model, normalizer, num_samples=8, persistence=taus), series)
    np.testing.assert_allclose(plain.held(taus), with_p.samples, atol=1e-5)
    assert np.isfinite(plain.since[~np.isnan(plain.last)]).all() and (plain.since[~np.isnan(plain.last)] > 0).all()


def _walks(n: int, seed: int) -> list[Series]:
    """Random walks, irregularly sampled: the last value is the best forecast at short gaps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.sort(rng.uniform(0, 4, 8))
        v = np.cumsum(rng.standard_normal((8, 1)) * np.sqrt(np.diff(t, prepend=0.0))[:, None], axis=0)
        out.append(Series(id=f"w{i}", times=t, values=(v + 5).astype(np.float32)))
    return out


def test_persistence_turns_on_where_the_last_value_forecasts_better(normalizer) -> None:
    """On random walks, a model that forecasts the channel's mean (a decoder of zeros, no residual) is
    beaten near the last value: a time scale is chosen and the held-out error falls on both tasks."""
    from latentcast.models.data import Normalizer

    walks = _walks(60, seed=1)
    norm = Normalizer.fit(walks, ("x",), ())
    model = LatentODE(tiny_config(residual="none", decoder_hidden=0), 1)
    with torch.no_grad():
        for p in model.decoder.net.parameters():
            p.zero_()
    tasks = forecast_tasks(Forecaster(model, norm, num_samples=4), walks, "half")
    taus, ratio = fit_persistence(tasks, ("x",))
    assert taus is not None and taus[0] in PERSISTENCE_GRID
    assert set(ratio["x"]) == {"last", "half"} and all(r < 1.0 for r in ratio["x"].values())
    cal = fit_calibration(tasks, "half", ("x",))
    assert cal.persistence == taus


def test_persistence_stays_off_when_it_does_not_help_or_values_are_few() -> None:
    rng = np.random.default_rng(0)
    n = 80
    centre = rng.standard_normal((4, n, 1))
    target = centre.mean(0) + 0.01 * rng.standard_normal((n, 1))  # the model's mean is the truth
    last = target + rng.standard_normal((n, 1))  # the last value is far off
    since = rng.uniform(0.01, 1.0, (n, 1))
    exact = HeldOut(centre, target, np.ones((n, 1)), last, since)
    assert fit_persistence({"last": exact, "half": exact}, ("x",))[0] is None
    # the last value is the truth, but fewer than MIN_VALUES held-out values: not fitted
    few = HeldOut(centre[:, :10], last[:10], np.ones((10, 1)), last[:10], since[:10])
    assert MIN_VALUES > 20 and fit_persistence({"last": few, "half": few}, ("x",)) == (None, {})


def test_persistence_never_trades_one_task_for_the_other() -> None:
    """The pull would make the last point far better and the second half worse: it stays off."""
    rng = np.random.default_rng(1)
    n = 60
    centre = rng.standard_normal((4, n, 1))
    last = centre.mean(0) + rng.standard_normal((n, 1))
    since = np.full((n, 1), 0.01)  # near the last value: any scale in the grid moves the forecast to it
    helps = HeldOut(centre, last.copy(), np.ones((n, 1)), last, since)  # the truth is the last value
    truth = centre.mean(0) - 0.3 * (last - centre.mean(0))
    hurts = HeldOut(centre, truth, np.ones((n, 1)), last, since)  # away from the last value: any pull hurts
    taus, ratio = fit_persistence({"last": helps, "half": hurts}, ("x",))
    assert taus is None and ratio["x"] == {"last": 1.0, "half": 1.0}
    assert fit_persistence({"last": helps, "half": helps}, ("x",))[0] is not None
