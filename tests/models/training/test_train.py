from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from latentcast.models.checkpoint import load_checkpoint, read_payload
from latentcast.models.config import DataConfig, ExperimentConfig, TrainConfig
from latentcast.models.data import TimeSpec
from latentcast.models.training.artifacts import BEST, LAST, METRICS, PLOT
from latentcast.models.training.datasets.base import DatasetSplit
from latentcast.models.training.report import better_baseline, format_report, validation_warnings
from latentcast.models.training.train import TrainingError, _stop_reason, train
from tests.conftest import make_series, tiny_config


def _split() -> DatasetSplit:
    s = make_series(40, seed=2, missing=0.2)
    return DatasetSplit(s[:30], s[30:36], s[36:], ("a", "b", "c"), ("b",), TimeSpec("day"), {"name": "toy"})


def _exp(epochs: int = 4, **train_kw) -> ExperimentConfig:
    # min_val_points 0: the split as given (cross-validation, which a table this small gets: test_crossval)
    kw: dict = dict(batch_size=10, lr=1e-2, lr_min=1e-3, val_samples=4, plot_series=2, min_val_points=0)
    tc = TrainConfig(epochs=epochs, **{**kw, **train_kw})
    return ExperimentConfig(DataConfig(name="toy"), tiny_config(), tc)


def test_tiny_training_run_loss_falls_and_writes_everything(tmp_path) -> None:
    res = train(_exp(), _split(), tmp_path, device="cpu", show_progress=False)
    hist = res.metrics["history"]
    assert len(hist) == 4
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.1
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    for name in (BEST, LAST, METRICS, PLOT):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / PLOT).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / METRICS).read_text())
    best = min(hist, key=lambda r: r["val_nmse"])
    assert saved["best"]["epoch"] == best["epoch"]
    bundle = load_checkpoint(tmp_path / BEST)
    assert bundle.metrics["validation"]["epoch"] == best["epoch"]
    assert bundle.data["channels"] == ["a", "b", "c"] and bundle.data["config"]["name"] == "toy"


class _Stop(Exception):
    pass


def test_resume_continues_exactly(tmp_path) -> None:
    full = tmp_path / "full"
    train(_exp(3), _split(), full, device="cpu", show_progress=False)

    def stop_after_first(row: dict) -> None:
        if row["epoch"] == 1:
            raise _Stop

    part = tmp_path / "part"
    with pytest.raises(_Stop):
        train(_exp(3), _split(), part, device="cpu", show_progress=False, on_epoch=stop_after_first)
    assert read_payload(part / LAST)["train_state"]["epoch"] == 1
    train(_exp(3), _split(), part, device="cpu", show_progress=False, resume=part / LAST)
    a, b = read_payload(full / LAST), read_payload(part / LAST)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-6, atol=1e-7)
    assert [r["epoch"] for r in b["train_state"]["history"]] == [1, 2, 3]


def test_resume_needs_a_training_checkpoint(tmp_path) -> None:
    train(_exp(1), _split(), tmp_path, device="cpu", show_progress=False)
    with pytest.raises(ValueError, match=r"last\.pt"):
        train(_exp(2), _split(), tmp_path / "x", device="cpu", show_progress=False, resume=tmp_path / BEST)


def test_rnn_baseline_trains_with_the_same_code(tmp_path) -> None:
    exp = ExperimentConfig(
        DataConfig(name="toy"),
        tiny_config(kind="rnn", learn_std=True),
        TrainConfig(epochs=3, batch_size=10, lr=1e-2, val_samples=1, plot_series=1),
    )
    res = train(exp, _split(), tmp_path, device="cpu", show_progress=False)
    hist = res.metrics["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert load_checkpoint(tmp_path / BEST).config.kind == "rnn"


def test_the_report_compares_with_the_naive_forecasts_and_travels_with_the_model(tmp_path) -> None:
    res = train(_exp(3), _split(), tmp_path, device="cpu", show_progress=False)
    report = res.metrics["report"]
    assert set(report["nmse"]) == {"latent_ode", "locf", "linear_trend"}
    assert set(report["nmse"]["locf"]) == {"a", "b", "c", "average"}
    assert 0.0 <= report["coverage80"] <= 1.0 and isinstance(report["beats_locf"], bool)
    bundle = load_checkpoint(tmp_path / BEST)
    assert bundle.metrics["report"] == json.loads((tmp_path / METRICS).read_text())["report"]
    if report["calibration"] is not None:  # a coverage outside 75-85% was calibrated, and it travels too
        assert bundle.calibration == tuple(report["calibration"])
    scales = report["persistence"]["scales"]  # the pull toward the last value, in the data's time unit
    assert list(scales) == ["a", "b", "c"] and report["persistence"]["time_unit"] == bundle.time.unit
    assert [round(t / bundle.time.scale, 6) for t in bundle.persistence or (0.0,) * 3] == list(scales.values())
    text = format_report(report)
    assert "LOCF" in text and "80% interval coverage" in text
    pulled = any(report["persistence"]["scales"].values())  # says which channels are pulled, or that none is
    assert ("are pulled toward it:" in text) == pulled and ("no channel's forecasts are pulled" in text) != pulled
    base = report["nmse"]
    loses = min(base["locf"]["average"], base["linear_trend"]["average"]) < base["latent_ode"]["average"]
    assert ("instead" in text) == loses  # names the better naive forecast when the model loses to it
    assert all(f"WARNING: {w}" in text for w in report["warnings"])  # the doubts travel with the report too


def test_early_stopping_and_the_time_budget(tmp_path) -> None:
    rows = [{"val_nmse": v, "val_loss": 0.0} for v in (1.0, 0.5, 0.6, 0.7)]  # the best was 2 epochs ago
    assert "train.patience" in (_stop_reason(_exp(30, patience=2), rows, 1.0) or "")
    assert _stop_reason(_exp(30, patience=3), rows, 1.0) is None and _stop_reason(_exp(30), rows, 1.0) is None
    res = train(_exp(30, max_minutes=1e-4), _split(), tmp_path / "m", device="cpu", show_progress=False)
    assert len(res.metrics["history"]) == 1 and "--max-minutes" in res.metrics["stopped_early"]


def test_a_first_epoch_that_cannot_solve_stops_with_the_likely_cause(tmp_path) -> None:
    from latentcast.models.config import SolverConfig

    exp = _exp(3)
    exp = ExperimentConfig(
        exp.data, tiny_config(solver=SolverConfig(method="rk4", step_size=1e-3, max_num_steps=5)), exp.train
    )
    with pytest.raises(TrainingError, match=r"batches of the first epoch failed to solve.*time scale.*--time-scale"):
        train(exp, _split(), tmp_path, device="cpu", show_progress=False)


def test_gross_outliers_are_set_aside_and_counted(tmp_path) -> None:
    split = _split()
    bad = split.train[0]
    values = bad.values.copy()
    values[0, 0] = 13_682.0  # a blood pressure typed with an extra digit or two
    split = DatasetSplit(
        [dataclasses.replace(bad, values=values), *split.train[1:]],
        split.val,
        split.test,
        split.channels,
        split.log_channels,
        split.time,
        split.description,
    )
    exp = _exp(2)
    exp = ExperimentConfig(DataConfig(name="toy", normalize="robust", outlier_z=10.0), exp.model, exp.train)
    res = train(exp, split, tmp_path, device="cpu", show_progress=False)
    assert res.metrics["report"]["outliers_excluded"]["train"]["a"] == 1
    assert res.metrics["report"]["outlier_examples"] == [{"series_id": bad.id, "channel": "a", "value": 13_682.0}]
    assert f"series {bad.id!r}: a = 13682 (plausible? raise data.outlier_z" in format_report(res.metrics["report"])
    norm = load_checkpoint(tmp_path / BEST).normalizer
    assert abs(norm.mean[0] - 2.0) < 1.0  # the robust centre did not move


def test_training_with_channel_balance_runs_and_is_not_the_plain_loss(tmp_path) -> None:
    plain = train(_exp(epochs=1), _split(), tmp_path / "plain", device="cpu", show_progress=False)
    balanced = train(_exp(epochs=1, channel_balance=1.0), _split(), tmp_path / "bal", device="cpu", show_progress=False)
    a, b = plain.metrics["history"][0]["train_loss"], balanced.metrics["history"][0]["train_loss"]
    assert np.isfinite(b) and a != b
    with pytest.raises(ValueError, match=r"train\.channel_balance"):
        TrainConfig(channel_balance=2.0)


def test_training_with_length_pools_runs(tmp_path) -> None:
    res = train(_exp(epochs=2, length_pool=2), _split(), tmp_path, device="cpu", show_progress=False)
    assert len(res.metrics["history"]) == 2 and np.isfinite(res.metrics["history"][-1]["train_loss"])


def test_retired_options_are_dropped_at_their_old_value_and_refused_otherwise() -> None:
    """Checkpoints and files written before the retirement carry residual_fill "zero" and loss_units
    "normalised": they still load. Any other value of a retired option names the commit that runs it."""
    from latentcast.models.config import RETIRED_AT, ConfigError, ModelConfig, from_dict

    cfg = from_dict(ModelConfig, {"residual": "level", "residual_fill": "zero"})
    assert cfg.residual == "level" and not hasattr(cfg, "residual_fill")
    assert from_dict(TrainConfig, {"epochs": 3, "loss_units": "normalised"}).epochs == 3
    with pytest.raises(ConfigError, match=rf"model\.residual_fill = 'mean': retired.*commit {RETIRED_AT}"):
        from_dict(ExperimentConfig, {"model": {"residual_fill": "mean"}})
    with pytest.raises(ConfigError, match=rf"loss_units = 'minmax': retired.*{RETIRED_AT}"):
        from_dict(TrainConfig, {"loss_units": "minmax"})
    for field, value in (("encoder", "gruode"), ("residual", "change")):
        with pytest.raises(
            ValueError, match=rf"model\.{field}: '{value}' .* was retired; check out commit {RETIRED_AT}"
        ):
            from_dict(ModelConfig, {field: value})
    with pytest.raises(ValueError, match=r"model\.encoder: must be one of \('gru', 'decay', 'odernn'\)"):
        from_dict(ModelConfig, {"encoder": "lstm"})


def test_a_doubtful_choice_of_epoch_or_calibration_is_warned_about() -> None:
    report = {"forecast_points": 19.0, "series": 12, "not_calibrated": ["c"]}
    history = [{"val_nmse": 0.5}, {"val_nmse": 0.6}, {"val_nmse": 0.55}]
    warnings = validation_warnings(report, history)
    assert len(warnings) == 3
    assert "19 held-out points in 12 series" in warnings[0] and "[data] split" in warnings[0]
    assert "the best epoch is the first of 3" in warnings[1] and "possibly noise" in warnings[1]
    assert "not calibrated for c" in warnings[2]
    roomy = {"forecast_points": 500.0, "series": 80, "not_calibrated": []}
    assert validation_warnings(roomy, [{"val_nmse": 0.6}, {"val_nmse": 0.5}]) == []
    assert validation_warnings(roomy, [{"val_nmse": 0.5}, {"val_nmse": 0.6}]) == [
        "the best epoch is the first of 2: no later epoch improved the validation score"
    ]
    folded = {**report, "cross_validation": {"folds": 5}}  # small even out of fold: no split to enlarge
    assert "forecast out of fold" in validation_warnings(folded, history)[0]
    assert "data.split" not in validation_warnings(folded, history)[0]


def test_the_report_names_the_naive_forecast_to_use_when_the_model_loses() -> None:
    def report(model: float, locf: float, trend: float) -> dict:
        rows = {k: {"a": v, "average": v} for k, v in (("latent_ode", model), ("locf", locf), ("linear_trend", trend))}
        return {"nmse": rows, "series": 30, "forecast_points": 300.0, "coverage80": 0.8, "beats_locf": model < locf}

    assert better_baseline(report(0.5, 0.6, 0.7)) is None
    assert better_baseline(report(0.5, 0.6, 0.3)) == ("a per-series linear trend", 0.3)
    text = format_report(report(0.5, 0.4, 0.9))
    assert "does not beat carrying the last observation forward" in text and "with carrying the last" in text


def test_a_non_negative_channel_with_zeros_and_no_bound_is_pointed_at_bounds(tmp_path) -> None:
    """Channel a holds zeros (no log scale keeps it positive): the report says how to bound it; once
    bounded, or for channels without zeros, nothing is said."""
    from latentcast.models.training.train import unbounded_at_zero
    from latentcast.models.validity import Validity

    split = _split()
    zeroed = [dataclasses.replace(s, values=np.where(np.arange(3) == 0, np.maximum(s.values - 2.5, 0), s.values))
              for s in split.train]  # fmt: skip
    split = dataclasses.replace(split, train=zeroed)
    hints = unbounded_at_zero(split, Validity.none(split.channels))
    assert len(hints) == 1 and "channel 'a'" in hints[0] and "--bounds 'a=0:'" in hints[0]
    assert unbounded_at_zero(split, Validity.from_config({"a": [0, math.inf]}, {}, split.channels)) == []
    res = train(_exp(1), split, tmp_path, device="cpu", show_progress=False)
    assert hints[0] in res.metrics["report"]["warnings"]


def test_a_validation_batch_that_cannot_solve_is_counted_not_raised(tmp_path) -> None:
    """Dynamics that blow up mid-training once made validation raise and the run die at that epoch."""
    from latentcast.models.config import SolverConfig
    from latentcast.models.training.validation import validate

    exp, split = _exp(1), _split()
    train(exp, split, tmp_path, device="cpu", show_progress=False)
    bundle = load_checkpoint(tmp_path / BEST)
    bundle.model.cfg = dataclasses.replace(
        bundle.model.cfg, solver=SolverConfig(method="rk4", step_size=1e-3, max_num_steps=5)
    )
    val = validate(bundle, split, exp, torch.device("cpu"))
    assert math.isnan(val["val_loss"]) and val["val_failed_batches"] == 1  # 6 series: one batch
    assert val["val_failed_series"] == len(split.val)  # the forecasts fail too, and say so


def test_long_series_train_on_windows_and_the_others_whole(tmp_path) -> None:
    from latentcast.models.data import random_windows

    split = _split()
    long = dataclasses.replace(split.train[0], times=split.train[0].times * 40)  # 40 times the others' span
    rng = np.random.default_rng(0)
    kept = random_windows(split.train[1:], 5.0, rng)
    assert all(a is b for a, b in zip(kept, split.train[1:], strict=True))
    assert rng.bit_generator.state == np.random.default_rng(0).bit_generator.state  # no draw for them
    span = 5.0
    for _ in range(20):
        (w,) = random_windows([long], span, rng)
        assert w.times[-1] - w.times[0] <= span and len(w) >= 1
        first = int(np.searchsorted(long.times, w.times[0]))
        np.testing.assert_array_equal(w.times, long.times[first : first + len(w)])  # contiguous
        np.testing.assert_array_equal(w.values, long.values[first : first + len(w)])
    res = train(_exp(2, window_factor=2.0), dataclasses.replace(split, train=[long, *split.train[1:]]), tmp_path,
                device="cpu", show_progress=False)  # fmt: skip
    assert all(math.isfinite(r["train_loss"]) for r in res.metrics["history"])


def test_an_epoch_whose_every_step_failed_stops_the_run_and_keeps_the_best(tmp_path, monkeypatch) -> None:
    from latentcast.models.training import train as module

    real = module._epoch

    def diverged_after_two(run, exp, epoch, dev, world, steps, on_step):
        done = real(run, exp, epoch, dev, world, steps, on_step)
        return done if epoch < 2 else dataclasses.replace(done, skipped=steps)

    monkeypatch.setattr(module, "_epoch", diverged_after_two)
    res = train(_exp(8), _split(), tmp_path, device="cpu", show_progress=False)
    assert (
        len(res.metrics["history"]) == 3 and "failed to solve (the dynamics diverged)" in res.metrics["stopped_early"]
    )
    assert load_checkpoint(tmp_path / BEST).metrics["validation"]["epoch"] <= 3


def test_a_run_with_no_finite_validation_score_says_so_instead_of_missing_its_checkpoint(tmp_path, monkeypatch) -> None:
    from latentcast.models.training import train as module

    real = module.validate
    monkeypatch.setattr(module, "validate", lambda *a, **k: {**real(*a, **k), "val_nmse": math.nan})
    with pytest.raises(TrainingError, match="no epoch of 2 had a finite validation score"):
        train(_exp(2), _split(), tmp_path, device="cpu", show_progress=False)
