from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from latentcast.frames import read_long_table
from latentcast.models.data import (
    DataError,
    Normalizer,
    TimeSpec,
    collate,
    random_contexts,
    series_from_frame,
    split_ids,
    to_model_time,
)
from tests.conftest import make_series


def test_numeric_times_are_scaled() -> None:
    out = to_model_time(pd.Series([0, 365.25, 730.5]), TimeSpec("day", 1 / 365.25))
    np.testing.assert_allclose(out, [0, 1, 2])


def test_iso_times_become_units_of_the_spec() -> None:
    col = pd.Series(["2026-01-01T00:00:00Z", "2026-01-02T12:00:00Z", "2026-01-01T06:00:00+06:00"])
    out = to_model_time(col, TimeSpec("day"))
    np.testing.assert_allclose(out - out[0], [0, 1.5, 0.0])


@pytest.mark.parametrize("bad", [["2026-01-01", "not a date"], ["2026-01-01", None]])
def test_unparsable_or_missing_times_are_refused(bad: list) -> None:
    with pytest.raises(DataError, match="time"):
        to_model_time(pd.Series(bad), TimeSpec("day"))


def test_unitless_refuses_datetimes() -> None:
    with pytest.raises(DataError, match="numeric"):
        to_model_time(pd.Series(["2026-01-01"]), TimeSpec("unitless"))


def test_frame_to_series_sorts_drops_empty_rows_and_keeps_masks() -> None:
    frame = pd.DataFrame(
        {
            "id": ["b", "a", "a", "a", "b"],
            "time": [5.0, 3.0, 1.0, 2.0, 4.0],
            "x": [1.0, 3.0, 1.0, np.nan, np.nan],
            "y": [np.nan, 30.0, 10.0, np.nan, 40.0],
        }
    )
    out = series_from_frame(frame, ["x", "y"], TimeSpec("day"))
    assert [s.id for s in out] == ["a", "b"]
    a, b = out
    np.testing.assert_array_equal(a.times, [1.0, 3.0])  # time 2 had no observation
    np.testing.assert_array_equal(a.values, [[1, 10], [3, 30]])
    np.testing.assert_array_equal(b.times, [4.0, 5.0])
    np.testing.assert_array_equal(b.mask, [[False, True], [True, False]])


def test_duplicate_times_name_the_series() -> None:
    frame = pd.DataFrame({"id": [1, 1], "time": [1.0, 1.0], "x": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"1 series has two rows at one time .* series '1' at"):
        series_from_frame(frame, ["x"], TimeSpec("day"))


def test_rows_at_one_time_merge_where_they_agree() -> None:
    """A repeated row, and channels reported in separate rows at one time, make one observation; rows
    that give a channel two values at one time stay an error (above)."""
    frame = pd.DataFrame(
        {"id": ["a"] * 5, "time": [0.0, 1.0, 1.0, 1.0, 2.0], "x": [1.0, 2.0, 2.0, None, 3.0],
         "y": [None, None, 7.0, 7.0, 8.0]}
    )  # fmt: skip
    (s,) = series_from_frame(frame, ["x", "y"], TimeSpec("day"))
    np.testing.assert_array_equal(s.times, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(s.values, np.array([[1.0, np.nan], [2.0, 7.0], [3.0, 8.0]], dtype=np.float32))
    clash = frame.assign(y=[None, None, 7.0, 6.0, 8.0])
    with pytest.raises(DataError, match=r"give a channel different values, e\.g\. series 'a' at 1\.0"):
        series_from_frame(clash, ["x", "y"], TimeSpec("day"))


def test_missing_columns_and_non_numeric_channels() -> None:
    frame = pd.DataFrame({"id": [1], "time": [1.0], "x": ["a"]})
    with pytest.raises(DataError, match=r"\['y'\]"):
        series_from_frame(frame, ["y"], TimeSpec("day"))
    with pytest.raises(DataError, match="not numeric"):
        series_from_frame(frame, ["x"], TimeSpec("day"))
    sexed = pd.DataFrame({"id": [1, 1], "time": [1.0, 2.0], "y": [1.0, 2.0], "sex": ["Male", "Male"]})
    with pytest.raises(DataError, match=r"columns \['sex'\] are not numeric.*encode a category as numbers"):
        series_from_frame(sexed, ["y"], TimeSpec("day"), static=["sex"])  # a static, not called a channel


def test_read_long_table_csv_and_parquet(tmp_path) -> None:
    frame = pd.DataFrame({"id": [1, 1], "time": [0.0, 1.0], "x": [1.0, np.nan]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        back = read_long_table(tmp_path / name)
        assert back.shape == (2, 3)
    with pytest.raises(DataError, match="no such file"):
        read_long_table(tmp_path / "missing.csv")


def test_normalizer_roundtrip_with_log_channel(series, normalizer) -> None:
    raw = np.concatenate([s.values for s in series])
    z = normalizer.transform(raw)
    obs = ~np.isnan(raw)
    np.testing.assert_allclose(np.nanmean(z, 0), 0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(z, 0), 1, atol=1e-4)
    back = normalizer.inverse(torch.as_tensor(np.nan_to_num(z))).numpy()
    np.testing.assert_allclose(back[obs], raw[obs], rtol=1e-5)
    assert Normalizer.from_dict(normalizer.to_dict()) == normalizer


def test_normalizer_refuses_log_of_non_positive() -> None:
    s = make_series(2)
    s[0].values[0, 0] = -1.0
    with pytest.raises(DataError, match=r"'a'.*<= 0"):
        Normalizer.fit(s, ("a", "b", "c"), ("a",))


def test_split_is_deterministic_disjoint_and_order_free() -> None:
    ids = [f"id{i}" for i in range(103)]
    a = split_ids(ids, (0.8, 0.1, 0.1), seed=3)
    b = split_ids(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert a == b
    train, val, test = a
    assert len(val) == 10 and len(test) == 10 and len(train) == 83
    assert set(train) | set(val) | set(test) == set(ids)
    assert not set(train) & set(val) and not set(val) & set(test)
    assert split_ids(ids, (0.8, 0.1, 0.1), seed=4) != a


def test_collate_shapes_masks_and_anchor(series, normalizer) -> None:
    ctx = [2] * len(series)
    for anchor in ("first", "last"):
        b = collate(series, normalizer, ctx, anchor)
        n = len(series)
        tt = max(len(s) for s in series)
        assert b.ctx_x.shape == (n, 2, 3) and b.tgt_x.shape == (n, tt, 3)
        assert b.ctx_len.tolist() == ctx
        for i, s in enumerate(series):
            ref = s.times[0] if anchor == "first" else s.times[1]
            np.testing.assert_allclose(b.tgt_t[i, : len(s)].numpy(), s.times - ref, atol=1e-5)
            np.testing.assert_array_equal(b.tgt_m[i, : len(s)].numpy(), s.mask)
            assert not b.tgt_m[i, len(s) :].any()  # padding never counts as observed
            assert b.tgt_future[i].tolist() == [False, False] + [True] * (len(s) - 2) + [False] * (tt - len(s))
        assert torch.all(b.ctx_x[b.ctx_m == 0] == 0)


def test_collate_rejects_bad_context(series, normalizer) -> None:
    with pytest.raises(DataError, match="context length"):
        collate(series, normalizer, [0] * len(series))


def test_random_contexts_leave_something_to_forecast(series) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        for s, c in zip(series, random_contexts(series, 1, rng), strict=True):
            assert 1 <= c <= len(s) - 1


def test_dates_beyond_pandas_nanoseconds_keep_their_order(tmp_path) -> None:
    """A CSV row dated 2300-01-01 once wrapped around to 1715 and was sorted first."""
    frame = pd.DataFrame({"id": ["a"] * 3, "time": ["2299-06-01", "2300-01-01", "2299-01-01"], "x": [2.0, 3.0, 1.0]})
    (s,) = series_from_frame(frame, ["x"], TimeSpec("day", 1.0))
    np.testing.assert_array_equal(s.values[:, 0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.diff(s.times), [151.0, 214.0])
    with pytest.raises(DataError, match="'now' is not an ISO-8601"):
        series_from_frame(frame.assign(time=["2026-01-01", "now", "2026-02-01"]), ["x"], TimeSpec("day", 1.0))
