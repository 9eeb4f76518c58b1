from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentcast.models.config import DataConfig
from latentcast.models.data import DataError
from latentcast.models.training.datasets import load_dataset, time_unit_of
from latentcast.models.training.datasets.pbcseq import CHANNELS, read_pbcseq
from latentcast.models.training.datasets.spirals import STOP, make_spirals, spiral_trajectories, spiral_windows


def test_spiral_trajectories_follow_the_example_formulas() -> None:
    ts, cw, cc = spiral_trajectories()
    assert ts.shape == (500,) and np.isclose(ts[1] - ts[0], STOP / 499)
    r_cc = np.hypot(cc[:, 0] - 5, cc[:, 1])
    np.testing.assert_allclose(r_cc, 0.3 * ts, atol=1e-12)
    z = STOP + 1 - ts
    np.testing.assert_allclose(np.hypot(cw[:, 0] + 5, cw[:, 1]), 0.3 * 50 / z, atol=1e-12)


def test_spiral_windows_are_deterministic_noisy_and_both_directions() -> None:
    t, noisy, truth, ccw = spiral_windows(400, 0.3, seed=0)
    assert t.shape == (200,) and t[0] == 0 and noisy.shape == truth.shape == (400, 200, 2)
    assert abs(float((noisy - truth).std()) - 0.3) < 0.01
    assert 0.4 < ccw.mean() < 0.6
    _, noisy2, _, _ = spiral_windows(400, 0.3, seed=0)
    np.testing.assert_array_equal(noisy, noisy2)


def test_spiral_series_subsample_only_the_observation_window() -> None:
    for n in (30, 50, 100):
        for s in make_spirals(5, (n,), seed=1):
            assert s.n_context == n and len(s) == n + 100
            assert (np.diff(s.times) > 0).all() and s.times[n - 1] < s.times[n]
            assert s.truth is not None
    a = make_spirals(5, (30,), seed=1)
    b = make_spirals(5, (50,), seed=1)
    assert a[0].truth is not None and b[0].truth is not None
    np.testing.assert_array_equal(a[0].truth[-100:], b[0].truth[-100:])  # same windows whatever n


def test_pbcseq_is_the_published_table() -> None:
    frame = read_pbcseq()
    assert len(frame) == 1945 and frame["id"].nunique() == 312
    assert abs(frame["chol"].isna().mean() - 0.42) < 0.01
    split = load_dataset(DataConfig(name="pbcseq", split=(0.7, 0.1, 0.2)))
    assert split.channels == CHANNELS
    assert len(split.train) + len(split.val) + len(split.test) == 312
    assert len(split.test) == 62
    s = split.train[0]
    assert s.times[0] >= 0 and (np.diff(s.times) > 0).all() and s.times[-1] < 15  # years


def test_user_file_needs_channels_and_splits(tmp_path) -> None:
    rows = [
        {"id": f"u{i}", "time": f"2026-01-{d:02d}", "a": float(i + d), "b": None} for i in range(10) for d in (1, 3, 9)
    ]
    path = tmp_path / "obs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(DataError, match="channels"):
        load_dataset(DataConfig(name=str(path)))
    split = load_dataset(DataConfig(name=str(path), channels=("a", "b"), time_unit="day", time_scale=1.0))
    assert len(split.train) == 8 and len(split.val) == 1 and len(split.test) == 1
    np.testing.assert_allclose(split.train[0].times - split.train[0].times[0], [0, 2, 8])
    auto = load_dataset(DataConfig(name=str(path), channels=("a", "b"), time_unit="day"))  # median span 8 days
    assert auto.time.scale == 0.5 and auto.description["preprocessing"]["time_scale_rule"].startswith("auto")
    np.testing.assert_allclose(auto.train[0].times - auto.train[0].times[0], [0, 1, 4])
    with pytest.raises(DataError, match="no such file"):
        load_dataset(DataConfig(name=str(tmp_path / "nope.csv")))


@pytest.mark.parametrize(("hours", "unit"), [(0.01, "second"), (0.5, "minute"), (6.0, "hour"), (24.0 * 700, "day")])
def test_the_unit_of_date_times_is_chosen_from_their_spans(hours: float, unit: str) -> None:
    start = pd.Timestamp("2025-01-01T00:00:00Z")
    rows = [
        {"id": f"s{i}", "time": (start + pd.Timedelta(hours=hours * k / 4)).isoformat(), "a": 1.0}
        for i in range(5)
        for k in range(5)
    ]
    got, rule = time_unit_of(pd.DataFrame(rows), DataConfig(name="t", channels=("a",)))
    assert got == unit and rule.startswith("auto")


def test_numeric_times_need_their_unit_named() -> None:
    frame = pd.DataFrame({"id": ["a", "a"], "time": [0.0, 3.0], "x": [1.0, 2.0]})
    with pytest.raises(DataError, match="the times are numbers; name their unit with --time-unit"):
        time_unit_of(frame, DataConfig(name="t", channels=("x",)))
    assert time_unit_of(frame, DataConfig(name="t", channels=("x",), time_unit="year")) == ("year", "given")
