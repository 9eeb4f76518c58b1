"""Physical bounds and missing-value markers: declared at training, stored in the checkpoint, applied
to training data and to every forecast's inputs and answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import latentcast
from latentcast.models import DataError
from latentcast.models.validity import Validity, parse_bounds, parse_missing_values


def test_flags_parse_to_bounds_and_markers() -> None:
    assert parse_bounds("pH=6.3:10, HR=0:") == {"pH": (6.3, 10.0), "HR": (0.0, math.inf)}
    assert parse_bounds("x=:5") == {"x": (-math.inf, 5.0)}
    assert parse_missing_values("-1,999") == {"*": (-1.0, 999.0)}
    assert parse_missing_values("Height=-1,Weight=-1|0") == {"Height": (-1.0,), "Weight": (-1.0, 0.0)}
    for bad in ("pH", "pH=6.3", "pH=a:b", "=1:2"):
        with pytest.raises(DataError, match="CHANNEL=LOWER:UPPER"):
            parse_bounds(bad)
    with pytest.raises(DataError, match="not a number"):
        parse_missing_values("Height=unknown")


def test_the_config_is_checked_by_channel() -> None:
    v = Validity.from_config({"*": (0.0, math.inf), "b": (1.0, 2.0)}, {"a": (-1.0,)}, ("a", "b"))
    assert v.lower == (0.0, 1.0) and v.upper == (math.inf, 2.0) and v.missing == ((-1.0,), ())
    with pytest.raises(DataError, match=r"\['c'\] are not channels"):
        Validity.from_config({"c": (0.0, 1.0)}, {}, ("a", "b"))
    with pytest.raises(DataError, match="need lower < upper"):
        Validity.from_config({"a": (2.0, 1.0)}, {}, ("a", "b"))
    values = np.array([[-1.0, 1.5], [3.0, 2.5], [np.nan, 0.5]])
    cleaned, outside = v.clean(values)
    np.testing.assert_array_equal(cleaned, [[np.nan, 1.5], [3.0, np.nan], [np.nan, np.nan]])
    assert outside.tolist() == [[False, False], [False, True], [False, True]]  # markers are not "outside"
    assert v.describe()["bounds"] == {"a": [0.0, None], "b": [1.0, 2.0]}


def _frame(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = np.sort(rng.uniform(0, 30, 6))
        for tt in t:
            rows.append({"id": f"s{i}", "time": tt, "hr": 70 + 5 * np.sin(tt / 5 + i), "w": 80.0 + i})
        rows[-6]["w"] = -1.0  # "unknown", at each series' first time
        rows[-5]["hr"] = 4000.0  # an impossible heart rate, at its second
    return pd.DataFrame(rows)


def test_fit_stores_them_applies_them_to_training_and_to_forecasts(tmp_path) -> None:
    frame = _frame()
    model = latentcast.fit(
        frame,
        channels=["hr", "w"],
        time_unit="hour",
        bounds={"hr": (0.0, 390.0)},
        missing_values=[-1.0],
        epochs=2,
        config={"model": {"latent_dim": 3, "encoder_hidden": 8, "dynamics_hidden": 8}},
        out=tmp_path / "run",
    )
    v = model.bundle.limits
    assert v.upper[0] == 390.0 and v.missing == ((-1.0,), (-1.0,))
    excluded = model.metrics["report"]["out_of_bounds_excluded"]
    # 30 series: cross-validated, so the model trained on the 27 of training and validation, one 4000 each
    assert excluded == {"train": {"hr": 27, "w": 0}}
    back = latentcast.load(tmp_path / "run" / "best.pt", device="cpu")
    assert back.bundle.limits == v
    one = frame[frame["id"] == "s5"].copy()
    unknown = model.predict(one, query_times=[40.0])
    one.loc[one["w"] == -1.0, "w"] = np.nan
    np.testing.assert_array_equal(model.predict(one, query_times=[40.0])["mean"], unknown["mean"])
    high = one.assign(hr=one["hr"].where(one.index != one.index[1], 4000.0))
    with pytest.warns(latentcast.LatentcastWarning, match="outside the channel's physical bounds"):
        fc = model.predict(high, query_times=[40.0, 50.0], quantiles=(0.01, 0.99))
    assert (fc[fc["channel"] == "hr"][["mean", "q0.01", "q0.99"]].to_numpy() <= 390.0).all()


def test_training_sets_aside_markers_silently_and_counts_only_impossible_values() -> None:
    from latentcast.models import Series
    from latentcast.models.training.preprocess import apply_validity

    v = Validity.from_config({"*": (0.0, 10.0)}, {"*": (-1.0,)}, ("a", "b"))
    s = Series("s", np.array([0.0, 1.0, 2.0]), np.array([[-1.0, 5.0], [12.0, -1.0], [-1.0, np.nan]], np.float32))
    out = apply_validity([s], v)
    assert out.outliers == {"a": 1, "b": 0}
    (kept,) = out.series
    np.testing.assert_array_equal(kept.times, [0.0])  # rows left with nothing observed are dropped
    np.testing.assert_array_equal(kept.values, [[np.nan, 5.0]])


def test_frequent_far_codes_are_named_in_the_training_report() -> None:
    from latentcast.models import Series
    from latentcast.models.data import Normalizer
    from latentcast.models.training.preprocess import suspect_codes

    rng = np.random.default_rng(0)
    sbp = rng.normal(120, 15, 400)
    sbp[::20] = 999.0  # 5% of the values
    hdl = rng.normal(50, 10, 400)
    hdl[:3] = -1.0  # too few to be a code
    s = [Series("a", np.arange(400.0), np.stack([sbp, hdl], axis=1).astype(np.float32))]
    norm = Normalizer.fit(s, ("sbp", "hdl"), method="robust")
    assert suspect_codes(s, norm) == {"sbp": [999.0]}
