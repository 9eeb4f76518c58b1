"""Strict date-time parsing: the one parser behind the service, the client, the API and training."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from latentcast.times import TimeParseError, from_seconds, parse_datetimes, to_unit


def test_iso_strings_with_and_without_offsets_become_utc_seconds() -> None:
    got = parse_datetimes(["1970-01-02", "1970-01-01T01:00:00Z", "1970-01-01T03:00:00+02:00", "1970-01-01 00:00:01.5"])
    np.testing.assert_allclose(got, [86400.0, 3600.0, 3600.0, 1.5])


@pytest.mark.parametrize(
    "bad",
    ["", "NaT", "nan", "now", "today", "2026/01/01", " 2026-01-01", "Jan 1 2026", "2026-W01", "1700000000"],
)
def test_what_pandas_would_accept_or_guess_is_refused_by_name(bad: str) -> None:
    with pytest.raises(TimeParseError) as info:
        parse_datetimes(["2026-01-01", bad])
    assert info.value.index == 1 and info.value.value == bad


def test_rfc3339_lowercase_t_and_z_are_read_like_uppercase() -> None:
    np.testing.assert_array_equal(
        parse_datetimes(["2026-01-01t00:00:00z", "2026-01-02t06:00:00+01:00"]),
        parse_datetimes(["2026-01-01T00:00:00Z", "2026-01-02T06:00:00+01:00"]),
    )
    with pytest.raises(TimeParseError, match="calendar") as info:
        parse_datetimes(["2026-01-01t00:00:00z", "2026-02-30t00:00:00z"])
    assert info.value.index == 1 and info.value.value == "2026-02-30t00:00:00z"  # as sent


def test_impossible_calendar_dates_are_refused() -> None:
    with pytest.raises(TimeParseError, match="calendar") as info:
        parse_datetimes(["2026-02-30"])
    assert info.value.index == 0


def test_dates_outside_the_nanosecond_range_do_not_wrap() -> None:
    got = parse_datetimes(["1500-01-01", "9999-12-31T23:59:59Z", "2300-01-01"])
    assert got[0] < 0 < got[2] < got[1]
    assert from_seconds(got).dt.year.tolist() == [1500, 9999, 2300]
    np.testing.assert_allclose(to_unit(got[2:] - got[:1], "day"), [(2300 - 1500) * 365.2425], rtol=1e-5)


def test_datetime_values_and_columns_are_taken_as_they_are() -> None:
    stamps = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02"]))  # naive: taken as UTC
    want = parse_datetimes(["2026-01-01", "2026-01-02"])
    np.testing.assert_array_equal(parse_datetimes(stamps), want)
    np.testing.assert_array_equal(parse_datetimes(stamps.to_numpy()), want)
    np.testing.assert_array_equal(parse_datetimes([dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "2026-01-02"]), want)
    with pytest.raises(TimeParseError, match="missing"):
        parse_datetimes(pd.Series([pd.Timestamp("2026-01-01"), pd.NaT]))
    with pytest.raises(TimeParseError):
        parse_datetimes(["2026-01-01", 3.0])


def test_unitless_takes_no_date_times() -> None:
    with pytest.raises(ValueError, match="numeric"):
        to_unit(np.zeros(1), "unitless")
