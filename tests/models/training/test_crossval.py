"""Validation sized to choose an epoch on, and cross-validation where a table is too small for one."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from latentcast.models.checkpoint import load_checkpoint
from latentcast.models.config import DataConfig, ExperimentConfig, TrainConfig
from latentcast.models.data import TimeSpec
from latentcast.models.training.crossval import (
    choose_epochs,
    fold_splits,
    held_out_points,
    held_out_values,
    pooled_report,
    sized_validation,
)
from latentcast.models.training.datasets.base import DatasetSplit
from latentcast.models.training.report import format_report
from latentcast.models.training.train import BEST, FOLDS, LAST, METRICS, train
from tests.conftest import make_series, tiny_config


def _split(n: int = 40, val: int = 6) -> DatasetSplit:
    s = make_series(n, seed=2, missing=0.2)
    test = s[n - 4 :]
    return DatasetSplit(s[: n - 4 - val], s[n - 4 - val : n - 4], test, ("a", "b", "c"), (), TimeSpec("day"), {})


def test_validation_grows_to_the_points_wanted_within_its_share() -> None:
    split = _split(100)
    before = held_out_points(split.val, "half")
    grown, sizing = sized_validation(split, "half", min_points=before + 20, max_share=0.3, seed=0)
    assert not sizing.short and sizing.moved > 0 and sizing.points >= before + 20
    assert held_out_points(grown.val, "half") == sizing.points
    ids = [s.id for s in grown.train + grown.val]
    assert sorted(ids) == sorted(s.id for s in split.train + split.val)  # nothing lost or repeated
    assert grown.test == split.test
    again, _ = sized_validation(split, "half", min_points=before + 20, max_share=0.3, seed=0)
    assert [s.id for s in again.val] == [s.id for s in grown.val]  # seeded


def test_validation_out_of_reach_grows_as_far_as_its_share_and_says_so() -> None:
    split = _split(40)  # 30 training, 6 validation series
    grown, sizing = sized_validation(split, "last", min_points=100, max_share=0.25, seed=0)
    assert sizing.short and sizing.moved == 3 and len(grown.val) == 9  # a quarter of 36
    assert sizing.points == held_out_points(grown.val, "last") < 100
    enough, sizing = sized_validation(split, "last", min_points=0, max_share=0.25, seed=0)
    assert not sizing.short and enough is split


def test_folds_partition_the_training_and_validation_series() -> None:
    split = _split(40)
    folds = fold_splits(split, 5, seed=0)
    held = [s.id for f in folds for s in f.val]
    pool = sorted(s.id for s in split.train + split.val)
    assert sorted(held) == pool  # each series validates exactly once
    for f in folds:
        assert not {s.id for s in f.train} & {s.id for s in f.val}
        assert len(f.train) + len(f.val) == len(pool)


def test_the_epochs_chosen_minimise_the_mean_over_folds_early_stops_padded() -> None:
    rows = lambda *v: [{"epoch": i + 1, "val_nmse": x} for i, x in enumerate(v)]  # noqa: E731
    epochs, curve = choose_epochs([rows(1.0, 0.5, 0.4, 0.45), rows(0.9, 0.6, 0.7)])
    assert curve == pytest.approx([0.95, 0.55, 0.55, 0.575])  # the second fold's 0.7 carried to epoch 4
    assert epochs == 2  # the first of the tied minima: fewer epochs


def test_the_epochs_chosen_are_past_the_warm_up() -> None:
    """Folds best at epoch 1 (the learning rate still rising): the choice is the best epoch from `first`."""
    rows = lambda *v: [{"epoch": i + 1, "val_nmse": x} for i, x in enumerate(v)]  # noqa: E731
    assert choose_epochs([rows(0.3, 0.9, 0.6, 0.5), rows(0.2, 0.8, 0.7, 0.4)])[0] == 1
    assert choose_epochs([rows(0.3, 0.9, 0.6, 0.5), rows(0.2, 0.8, 0.7, 0.4)], first=3)[0] == 4
    assert choose_epochs([rows(0.3, 0.9)], first=5)[0] == 2  # fewer epochs than that: the last


def test_the_out_of_fold_report_describes_the_folds_models_at_the_chosen_epochs(tmp_path) -> None:
    """Not each fold's own best epoch (chosen on the very series it is then scored on): every fold's model
    after the epochs chosen, here all 3 (the warm-up takes 2), which is each fold's last.pt."""
    split = _split(40)
    tc = TrainConfig(epochs=3, warmup_epochs=2, batch_size=10, lr=1e-2, val_samples=4, plot_series=0, folds=3)
    exp = ExperimentConfig(DataConfig(name="toy"), tiny_config(), tc)
    res = train(exp, split, tmp_path, "cpu", show_progress=False)
    report = res.metrics["report"]
    assert report["cross_validation"]["epochs_chosen"] == 3
    parts = fold_splits(split, 3, tc.seed)
    fitted = [(load_checkpoint(tmp_path / FOLDS / str(k + 1) / LAST), f.val) for k, f in enumerate(parts)]
    want, _ = pooled_report(fitted, torch.device("cpu"), tc.val_task, samples=tc.val_samples)
    assert report["nmse"] == want["nmse"] and report["coverage80"] == want["coverage80"]


def test_a_small_table_is_cross_validated_and_trained_on_every_series(tmp_path) -> None:
    split = _split(40)
    tc = TrainConfig(epochs=3, batch_size=10, lr=1e-2, lr_min=1e-3, val_samples=4, plot_series=2, folds=3)
    res = train(
        ExperimentConfig(DataConfig(name="toy"), tiny_config(), tc), split, tmp_path, "cpu", show_progress=False
    )
    cv = res.metrics["report"]["cross_validation"]
    assert cv["folds"] == 3 and 1 <= cv["epochs_chosen"] <= 3 and len(cv["mean_val_score_per_epoch"]) == 3
    assert [p.name for p in sorted((tmp_path / FOLDS).iterdir())] == ["1", "2", "3"]
    assert len(res.metrics["history"]) == cv["epochs_chosen"]  # the final run: that many epochs, the last kept
    assert res.metrics["best"] == {
        "epoch": cv["epochs_chosen"],
        "val_nmse": res.metrics["report"]["nmse"]["latent_ode"]["average"],
        "cross_validated": 3,
    }
    report = res.metrics["report"]
    assert report["series"] == len(split.train) + len(split.val)  # every series forecast out of fold
    assert report["split"].startswith("out-of-fold") and "validation holds" in report["validation_size"]
    bundle = load_checkpoint(tmp_path / BEST)  # weights-only: the report holds plain numbers
    assert bundle.data["split"] == {"train": len(split.train) + len(split.val), "val": 0, "test": 4, "folds": 3}
    assert bundle.data["fitted_ids"] == sorted(s.id for s in split.train + split.val)  # a backtest on them: in-sample
    assert json.loads((tmp_path / METRICS).read_text())["best"]["cross_validated"] == 3
    assert format_report(report).startswith("out-of-fold report (")


def test_cross_validation_is_off_for_large_tables_and_on_request(tmp_path) -> None:
    split = _split(40)
    tc = TrainConfig(epochs=2, batch_size=10, val_samples=4, plot_series=0, cv_max_series=10)
    res = train(
        ExperimentConfig(DataConfig(name="toy"), tiny_config(), tc), split, tmp_path, "cpu", show_progress=False
    )
    assert "cross_validation" not in res.metrics["report"] and not (tmp_path / FOLDS).exists()
    assert any("fewer than" in w for w in res.metrics["report"]["warnings"])  # the small validation, warned
    off = dataclasses.replace(tc, cv_max_series=200, folds=0)
    res = train(
        ExperimentConfig(DataConfig(name="toy"), tiny_config(), off), split, tmp_path / "b", "cpu", show_progress=False
    )
    assert "cross_validation" not in res.metrics["report"]


def test_validation_also_grows_until_each_channel_can_be_calibrated_where_the_share_allows() -> None:
    split = _split(100)
    points = held_out_points(split.val, "half")
    counts = held_out_values(split.val, "half", 3)
    grown, sizing = sized_validation(split, "half", points, 0.3, seed=0, min_values=int(counts.max()) + 10)
    assert sizing.moved > 0 and (held_out_values(grown.val, "half", 3) >= counts.max() + 10).all()
    capped, sizing = sized_validation(split, "half", points, 0.2, seed=0, min_values=10**6)  # out of reach
    assert not sizing.short and len(capped.val) <= 0.2 * (len(split.train) + len(split.val))
