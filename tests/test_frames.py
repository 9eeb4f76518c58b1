"""Long tables ↔ flat arrays, the converter shared by the API, the client and training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentcast.frames import DataError, LatentcastWarning, from_frame, long_layout, offsets, query_table, to_frame
from latentcast.models import TimeSpec
from latentcast.models.data import series_from_frame


def _obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [2, 1, 2, 1, 1],
            "time": [5.0, 3.0, 1.0, 1.0, 2.0],
            "a": [1.0, 2.0, np.nan, 4.0, 5.0],
        }
    )


def test_series_are_sorted_by_id_then_time_and_missing_channels_are_nan() -> None:
    t = from_frame(_obs(), ["a", "b"])
    assert t.keys == [1, 2] and t.ids == ["1", "2"]
    np.testing.assert_array_equal(t.offsets, [0, 3, 5])
    np.testing.assert_array_equal(t.times.values, [1.0, 2.0, 3.0, 1.0, 5.0])
    np.testing.assert_array_equal(t.values[:, 0], [4.0, 5.0, 2.0, np.nan, 1.0])
    assert np.isnan(t.values[:, 1]).all() and not t.times.is_datetime


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (_obs().drop(columns="time"), r"columns \['time'\] not in the table"),
        (_obs().rename(columns={"a": "z"}), "none of the channels"),
        (_obs().assign(a=["x"] * 5), "not numeric"),
        (_obs().assign(a=np.inf), "inf"),
        (_obs().assign(time=[1.0, np.nan, 2.0, 3.0, 4.0]), "non-finite times"),
        (_obs().assign(time=["2026-01-01"] * 4 + ["yesterday"]), "row 4: 'yesterday' is not an ISO-8601"),
        (_obs().assign(id=[1, "1", 2, 2, 2]), "read the same as text"),
    ],
)
def test_bad_tables_say_what_to_fix(frame: pd.DataFrame, match: str) -> None:
    with pytest.raises(DataError, match=match):
        from_frame(frame, ["a"])


def test_query_times_as_a_list_a_mapping_or_a_table() -> None:
    t = from_frame(_obs(), ["a"])
    for q in ([7.0, 8.0], {1: [7.0, 8.0], "2": [7.0, 8.0]}, pd.DataFrame({"id": [1, 1, 2, 2], "time": [7.0, 8.0] * 2})):
        times, q_off = query_table(t, q)
        np.testing.assert_array_equal(times.values, [7.0, 8.0, 7.0, 8.0])
        np.testing.assert_array_equal(q_off, [0, 2, 4])
    with pytest.raises(DataError, match="series 2 has no query time"):
        query_table(t, {1: [7.0]})
    with pytest.raises(DataError, match="must be numbers"):
        query_table(t, ["2026-01-01"])
    with pytest.raises(DataError, match="give a list"):
        query_table(t, "7.0")


def test_the_long_answer_is_series_by_query_by_channel() -> None:
    q_off = offsets([2, 1])
    series, query, channel = long_layout(q_off, 2)
    np.testing.assert_array_equal(series, [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(query, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(channel, [0, 1, 0, 1, 0, 1])
    t = from_frame(_obs().assign(time=pd.Timestamp("2026-01-01") + pd.to_timedelta(_obs()["time"], "D")), ["a"])
    times, _ = query_table(t, ["2026-02-01", "2026-03-01"])
    mean = np.arange(8.0).reshape(4, 2)
    quant = np.stack([mean - 1, mean + 1])
    out = to_frame(t.keys, offsets([2, 2]), times, ["a", "b"], mean - 0.5, mean, quant, [0.1, 0.9])
    assert list(out.columns) == ["id", "time", "channel", "point", "mean", "q0.1", "q0.9"]
    np.testing.assert_array_equal(out["point"], np.arange(8.0) - 0.5)
    assert out["id"].tolist() == [1] * 4 + [2] * 4 and out["channel"].tolist() == ["a", "b"] * 4
    assert out["time"].iloc[2] == pd.Timestamp("2026-03-01", tz="UTC")
    np.testing.assert_array_equal(out["q0.9"], np.arange(8.0) + 1)


def test_query_times_for_ids_the_table_lacks_are_named() -> None:
    table = from_frame(pd.DataFrame({"id": ["007", "8"], "time": [0.0, 1.0], "x": [1.0, 2.0]}), ["x"])
    with pytest.warns(LatentcastWarning, match=r"ids not in the table, not forecast: '7'"):
        times, offs = query_table(table, {"007": [2.0], "8": [3.0], 7: [4.0]})
    assert times.values.tolist() == [2.0, 3.0]
    assert offs.tolist() == [0, 1, 2]


def test_two_rows_at_one_time_are_named_in_the_tables_units() -> None:
    frame = pd.DataFrame({"id": ["a", "a", "b", "b", "c"], "time": [5.0, 5.0, 1.0, 1.0, 0.0], "x": [1.0, 2, 3, 4, 5]})
    with pytest.raises(DataError, match=r"2 series have two rows at one time .*series 'a' at 5.0; series 'b' at 1.0"):
        series_from_frame(frame, ["x"], TimeSpec("day", 0.01))


def test_rows_of_one_series_at_one_time_merge_where_they_agree() -> None:
    """A repeated row and channels in separate rows become one row (for forecasts as for training);
    rows that disagree stay, for the checks to refuse."""
    frame = pd.DataFrame({"id": ["a", "a", "a", "b", "b"], "time": [1.0, 1.0, 1.0, 2.0, 2.0],
                          "x": [5.0, 5.0, None, 1.0, 2.0], "y": [None, None, 3.0, 0.0, 0.0]})  # fmt: skip
    table = from_frame(frame, ["x", "y"])
    assert table.offsets.tolist() == [0, 1, 3]  # a: one row; b: its two disagreeing rows kept
    np.testing.assert_array_equal(table.values[0], [5.0, 3.0])
    np.testing.assert_array_equal(table.times.values, [1.0, 2.0, 2.0])
