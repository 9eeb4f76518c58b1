from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from latentcast.models.data import Normalizer
from latentcast.models.forecast import Forecaster, raw_mean
from latentcast.models.latent_ode import LatentODE
from latentcast.models.packed import PackedSeries
from latentcast.models.solve import Status
from tests.conftest import make_series, tiny_config


def test_raw_units_queries_anywhere_and_in_the_order_given(series, normalizer) -> None:
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=8, batch_size=4)
    queries = [np.array([s.times[-1] + 1.0, s.times[0] - 0.5, (s.times[0] + s.times[1]) / 2]) for s in series]
    out = fc.predict(series, queries, levels=(0.1, 0.5, 0.9), return_samples=True)
    assert [f.id for f in out] == [s.id for s in series]
    for f, q in zip(out, queries, strict=True):
        assert f.mean.shape == (3, 3) and f.samples is not None and f.samples.shape == (8, 3, 3)
        np.testing.assert_array_equal(f.times, q)
        assert (f.quantiles[0.1] <= f.quantiles[0.5]).all() and (f.quantiles[0.5] <= f.quantiles[0.9]).all()
        assert (f.samples[:, :, 1] > 0).all()  # channel b is on a log scale: raw values stay positive
        assert f.status == 0
    # batching (batch_size=4 over 6 series) changes nothing
    one = fc.predict(series[5:], queries[5:], levels=(0.1, 0.5, 0.9))
    np.testing.assert_allclose(one[0].mean, out[5].mean, rtol=1e-4, atol=1e-6)


def test_series_can_have_different_numbers_of_queries(series, normalizer) -> None:
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=4)
    queries = [s.times[-1] + np.arange(1, k + 2) for k, s in enumerate(series)]
    out = fc.predict(series, queries)
    assert [len(f.mean) for f in out] == [k + 1 for k in range(len(series))]
    with pytest.raises(ValueError, match="at least one query"):
        fc.predict(series[:2], [queries[0], np.array([])])


def test_raw_mean_of_a_log_channel_is_the_log_normal_mean() -> None:
    norm = Normalizer(("x",), (True,), (1.0,), (2.0,))
    samples = torch.tensor([[[0.0]], [[1.0]]], dtype=torch.float64)  # (S=2, 1, D=1)
    std = torch.tensor([0.5], dtype=torch.float64)
    got = float(raw_mean(norm, samples, std))
    want = np.mean([np.exp(1 + 2 * m + (2 * 0.5) ** 2 / 2) for m in (0.0, 1.0)])
    assert abs(got - want) / want < 1e-9


def test_context_length_limits_what_the_model_sees(normalizer) -> None:
    s = make_series(3, seed=4)
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=0)  # the posterior mean alone
    q = [x.times[-1:] + 1 for x in s]
    full = fc.predict(s, q)
    short = fc.predict(s, q, n_context=[1, 1, 1])
    assert all(np.isfinite(f.mean).all() and f.status == 0 for f in full + short)
    assert any(not np.allclose(a.mean, b.mean) for a, b in zip(full, short, strict=True))


def test_a_non_finite_forecast_is_a_failed_series_not_a_number(series, normalizer) -> None:
    model = LatentODE(tiny_config(), 3)
    fc = Forecaster(model, normalizer, num_samples=4)
    queries = [s.times[-1] + np.array([0.5, 1.0]) for s in series]
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # an output bias of +inf on channel a: every value of that channel overflows
        last.bias[0] = float("inf")
    out = fc.predict(series, queries, levels=(0.1, 0.9))
    assert all(f.status == Status.NONFINITE for f in out)


def test_asking_to_see_more_samples_does_not_move_the_mean_or_quantiles(series, normalizer) -> None:
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=8)
    packed = PackedSeries.from_series(series, [s.times[-1] + np.array([0.5, 2.0]) for s in series])
    plain = fc.predict_packed(packed, levels=(0.1, 0.9))
    shown = fc.predict_packed(packed, levels=(0.1, 0.9), return_samples=40)
    np.testing.assert_allclose(shown.mean, plain.mean, rtol=1e-5, atol=1e-6)  # float32 rounding only
    np.testing.assert_allclose(shown.quantiles, plain.quantiles, rtol=1e-5, atol=1e-6)
    wider = fc.predict_packed(packed, levels=(0.1, 0.9), num_samples=40)  # what the old path computed
    assert np.abs(wider.mean - plain.mean).max() > 1e-3
    assert shown.samples is not None and shown.samples.shape[0] == 40
    few = fc.predict_packed(packed, levels=(0.1, 0.9), return_samples=3)
    assert few.samples is not None and few.samples.shape[0] == 3
    np.testing.assert_allclose(few.samples, shown.samples[:3], rtol=1e-5, atol=1e-6)  # the same first draws


def test_how_far_an_answer_lies_is_reported_and_refused_only_when_strict(series, normalizer) -> None:
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=4, unusual_scales=1e-3)
    packed = PackedSeries.from_series(series[:2], [s.times[-1] + np.array([0.5, 1.0]) for s in series[:2]])
    out = fc.predict_packed(packed, levels=(0.1, 0.9), return_samples=3)
    assert (out.status == Status.OK).all() and (out.far > 1e-3).all()
    z = np.abs(normalizer.transform(out.mean))  # the mean as answered, on the model's scale
    assert (out.far >= np.array([z[:2].max(), z[2:].max()]) - 1e-4).all()
    assert set(out.far_channel.tolist()) <= {0, 1, 2}
    fc.strict = True
    assert (fc.predict_packed(packed).status == Status.OUT_OF_RANGE).all()
    fc.unusual_scales = 1e6
    assert (fc.predict_packed(packed).status == Status.OK).all()


def test_samples_count_in_how_far_an_answer_lies(series, normalizer) -> None:
    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=4)
    packed = PackedSeries.from_series(series[:1], [series[0].times[-1] + np.array([0.5])])
    plain = fc.predict_packed(packed, levels=(0.5,))
    many = fc.predict_packed(packed, levels=(0.5,), return_samples=64)
    assert many.samples is not None
    z = np.abs(normalizer.transform(many.samples[:, :, :].reshape(-1, 3))).max()
    assert many.far[0] >= z - 1e-4 and many.far[0] >= plain.far[0] - 1e-6


def test_answers_are_clipped_to_the_bounds_and_inputs_read_as_declared(series, normalizer) -> None:
    from latentcast.models.validity import Validity

    model = LatentODE(tiny_config(), 3)
    packed = PackedSeries.from_series(series[:2], [s.times[-1] + np.array([0.5, 2.0]) for s in series[:2]])
    free = Forecaster(model, normalizer, num_samples=4).predict_packed(packed, levels=(0.1, 0.9), return_samples=8)
    lo, hi = float(np.median(free.mean[:, 0])), float(np.max(free.mean[:, 0]))
    bounds = Validity.from_config({"a": (lo, hi + 1.0)}, {"*": (-1.0,)}, normalizer.channels)
    fc = Forecaster(model, normalizer, num_samples=4, validity=bounds)
    got = fc.predict_packed(packed, levels=(0.1, 0.9), return_samples=8)
    assert got.samples is not None
    for arr in (got.mean[:, 0], got.quantiles[:, :, 0], got.samples[:, :, 0]):
        assert (arr >= np.float32(lo)).all() and (arr <= np.float32(hi + 1.0)).all()
    # the same as an unbounded model given the inputs with out-of-bounds values set aside, then clipped
    seen = packed.with_values(bounds.clean(packed.values)[0])
    ref = Forecaster(model, normalizer, num_samples=4).predict_packed(seen, levels=(0.1, 0.9), return_samples=8)
    np.testing.assert_array_equal(got.mean[:, 1:], ref.mean[:, 1:])  # unbounded channels untouched
    np.testing.assert_array_equal(got.mean[:, 0], np.clip(ref.mean[:, 0], np.float32(lo), np.float32(hi + 1.0)))
    marked = PackedSeries.from_series(series[:2], [s.times[-1] + np.array([0.5, 2.0]) for s in series[:2]])
    marked.values[0, 1] = -1.0  # read as not observed: the forecast of an unobserved value
    unseen = marked.values.copy()
    unseen[0, 1] = np.nan
    same = dataclasses.replace(marked, values=unseen)
    np.testing.assert_array_equal(fc.predict_packed(marked).mean, fc.predict_packed(same).mean)


def test_chunks_bound_the_solver_buffer_and_change_nothing(series, normalizer) -> None:
    queries = [s.times[-1] + np.linspace(0.1, 3.0, 5 + 10 * i) for i, s in enumerate(series)]
    packed = PackedSeries.from_series(series, queries)
    whole = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=4)
    tight = Forecaster(whole.model, normalizer, num_samples=4, max_chunk_values=4 * 4 * 40)
    chunks = tight._chunks(packed, 4)
    assert len(chunks) > 2 and chunks[0][0] == 0 and chunks[-1][1] == len(series)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(chunks))
    a, b = whole.predict_packed(packed, levels=(0.1, 0.9)), tight.predict_packed(packed, levels=(0.1, 0.9))
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.quantiles, b.quantiles, rtol=1e-4, atol=1e-6)  # within the CDF tolerance


def test_calibration_widens_an_overconfident_forecast_to_80_percent(normalizer) -> None:
    """A model whose noise is far below the data's: its 80% interval covers little, until the spread
    factor fitted on held-out series widens it."""
    from latentcast.models.training.calibrate import fit_factors, held_out
    from latentcast.models.training.metrics import holdout_metrics

    series = make_series(120, seed=9, missing=0.0)  # >= MIN_VALUES held-out values per channel
    model = LatentODE(tiny_config(obs_std=0.25, anchor="last", residual="level", decoder_hidden=0), 3)
    with torch.no_grad():  # forecasts "no change" (LOCF) with a noise smaller than the changes
        for p in model.decoder.net.parameters():
            p.zero_()
    plain = Forecaster(model, normalizer, num_samples=16)
    before = holdout_metrics(plain, series)["coverage80"]
    h = held_out(plain, series)
    factors, seen, _ = fit_factors(h.samples, h.target, h.std, normalizer.channels)
    assert before < 0.75 and min(factors) > 1.0 and set(seen) == {"a", "b", "c"}
    calibrated = Forecaster(model, normalizer, num_samples=16, spread=factors)
    after = holdout_metrics(calibrated, series)
    assert 0.7 <= after["coverage80"] <= 0.9
    np.testing.assert_allclose(  # the mean does not move
        calibrated.predict(series[:3], [s.times[-1:] for s in series[:3]])[0].mean,
        plain.predict(series[:3], [s.times[-1:] for s in series[:3]])[0].mean,
        rtol=1e-5,
    )


def test_calibration_needs_enough_held_out_values(normalizer) -> None:
    """Twenty series give twenty held-out values per channel: too few to fit a factor on (it would fit
    their noise), so none is fitted."""
    from latentcast.models.training.calibrate import MIN_VALUES, fit_factors, held_out

    model = LatentODE(tiny_config(obs_std=0.25, anchor="last", residual="level", decoder_hidden=0), 3)
    h = held_out(Forecaster(model, normalizer, num_samples=16), make_series(20, seed=9, missing=0.0))
    factors, seen, _ = fit_factors(h.samples, h.target, h.std, normalizer.channels)
    assert MIN_VALUES > 20 and factors == (1.0, 1.0, 1.0) and seen == {}


def test_a_tighter_tolerance_costs_more_evaluations_and_errs_less(series, normalizer) -> None:
    """In float64, against a solve at rtol 1e-11: each tenfold-or-more tighter tolerance spends more
    evaluations and lands closer; the evaluations are reported per query."""
    from latentcast.models.config import SolverConfig

    fc = Forecaster(LatentODE(tiny_config(), 3), normalizer, num_samples=0, dtype=torch.float64)
    packed = PackedSeries.from_series(series, [s.times[-1] + np.linspace(0.5, 4.0, 6) for s in series])
    exact = fc.predict_packed(packed, solver=SolverConfig(rtol=1e-11, atol=1e-12, max_num_steps=100_000))
    runs = [fc.predict_packed(packed, solver=SolverConfig(rtol=r, atol=r / 10)) for r in (1e-2, 1e-4, 1e-7)]
    errors = [float(np.abs(r.mean - exact.mean).max()) for r in runs]
    nfes = [float(r.nfe.mean()) for r in runs]
    assert nfes[0] < nfes[1] < nfes[2] < float(exact.nfe.mean())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 100 and (exact.status == 0).all()
