"""Times as users send them: numbers in a unit, or ISO-8601 date-times. The one place they are parsed.

Date-times become float64 seconds since the Unix epoch (UTC; a string without an offset is taken as
UTC). Parsing is strict: only ISO-8601 strings (`2026-01-03`, `2026-01-03T08:30`, `…:00.5Z`,
`…+02:00`), datetime64 values or datetime objects. Empty strings, "NaT", "nan", "now" and "today",
which pandas would otherwise accept, are refused, and so is any year outside 0001–9999. No torch here:
the HTTP client uses this module too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

# Seconds per supported time unit. "unitless": plain numbers with no calendar meaning (synthetic data);
# date-times are refused.
TIME_UNITS: dict[str, float] = {
    "unitless": 0.0,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
    "year": 31557600.0,  # 365.25 days
}

# The strict form: ASCII digits, fields in range.
ISO_8601 = re.compile(
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"  # date, years 0001-9999
    r"(?:[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?)?"  # time of day
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"  # UTC offset
)
# The loose form, to say which field of a string that is not the strict form is wrong.
_FIELDS = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?)?"
    r"(?:[Zz]|[+-](?P<offset_hour>[0-9]{2})(?::?(?P<offset_minute>[0-9]{2}))?)?"
)
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
# seconds since the epoch of 0001-01-01T00:00:00Z and of 10000-01-01T00:00:00Z
FIRST_SECOND, END_SECOND = -62135596800.0, 253402300800.0


class TimeParseError(ValueError):
    """values[index] is not a strict ISO-8601 date-time; `reason` says why."""

    def __init__(self, index: int, value: object, reason: str):
        self.index = index
        self.value = value
        self.reason = reason
        super().__init__(f"[{index}] = {value!r}: {reason}")


def is_numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def parse_datetimes(values: Sequence[Any] | pd.Series | np.ndarray) -> np.ndarray:
    """Date-times → (N,) float64 seconds since the Unix epoch, UTC, to the microsecond. Raises
    `TimeParseError` naming the first element that is not a strict ISO-8601 date-time (or a datetime
    value) or lies outside the years 0001–9999."""
    col = values if isinstance(values, pd.Series) else pd.Series(values, dtype=_dtype_of(values))
    col = col.reset_index(drop=True)
    if not pd.api.types.is_datetime64_any_dtype(col):
        items = values if isinstance(values, list) else col.tolist()
        if set(map(type, items)) == {str} and all(map(ISO_8601.fullmatch, items)):
            pass  # the common case, checked in one C-level pass
        else:
            for i, v in enumerate(items):  # mixed kinds: element by element, for the message
                if isinstance(v, str):
                    if not ISO_8601.fullmatch(v):
                        raise TimeParseError(i, v, _why_not(v))
                elif not isinstance(v, dt.datetime | np.datetime64) or pd.isna(v):
                    raise TimeParseError(i, v, "not an ISO-8601 date-time string")
        try:
            col = pd.to_datetime(col, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            # RFC 3339 allows a lowercase "t" and "z", which pandas' ISO8601 parser does not take
            col = col.map(lambda v: v.upper() if isinstance(v, str) else v)
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                col = pd.to_datetime(col, utc=True, format="ISO8601")
        if not pd.api.types.is_datetime64_any_dtype(col):
            for i, v in enumerate(col):  # find the first one that fails, for the message
                try:
                    pd.to_datetime(pd.Series([v], dtype=object), utc=True, format="ISO8601")
                except (ValueError, TypeError, OverflowError):
                    sent = items[i]
                    raise TimeParseError(i, sent, "not a calendar date-time (no such day in that month)") from None
            raise TimeParseError(0, items[0], "not valid date-times") from None
    missing = np.flatnonzero(col.isna().to_numpy())
    if missing.size:
        i = int(missing[0])
        raise TimeParseError(i, values[i] if not isinstance(values, pd.Series) else None, "missing date-time")
    seconds = _seconds(col if isinstance(col.dtype, pd.DatetimeTZDtype) else col.dt.tz_localize("UTC"))
    check_range(seconds, values)
    return seconds


def check_range(seconds: np.ndarray, values: Any = None) -> None:
    """Seconds since the epoch within the years 0001–9999, or a TimeParseError naming the first outside."""
    out = np.flatnonzero(
        ~((seconds >= FIRST_SECOND) & (seconds <= END_SECOND))
    )  # float64: 9999-12-31T23:59:59.999999 rounds up
    if out.size:
        i = int(out[0])
        shown = values[i] if values is not None and not isinstance(values, pd.Series) else seconds[i]
        raise TimeParseError(i, shown, "outside the years 0001–9999")


def _why_not(v: str) -> str:
    """What makes `v` not a strict ISO-8601 date-time, field by field."""
    m = _FIELDS.fullmatch(v) if v.isascii() else None
    if m is None:
        return "not an ISO-8601 date-time (e.g. 2026-01-03 or 2026-01-03T08:30:00Z; ASCII digits)"
    f = {k: int(x) for k, x in m.groupdict().items() if x is not None and k != "fraction"}
    checks = [
        (f["year"] == 0, "outside the years 0001–9999 (year 0000)"),
        (not 1 <= f["month"] <= 12, f"not a calendar date-time (month {f['month']:02d})"),
        (not 1 <= f["day"] <= 31, f"not a calendar date-time (day {f['day']:02d})"),
        (f.get("hour", 0) > 23, f"not a calendar date-time (hour {f.get('hour', 0):02d}; the day ends at 23:59:59)"),
        (f.get("minute", 0) > 59, f"not a calendar date-time (minute {f.get('minute', 0):02d})"),
        (f.get("second", 0) == 60, "a leap second (second 60), which date-times here cannot hold; use :59.999999"),
        (f.get("second", 0) > 60, f"not a calendar date-time (second {f.get('second', 0):02d})"),
        (f.get("offset_hour", 0) > 23 or f.get("offset_minute", 0) > 59, "not a valid UTC offset"),
    ]
    return next((why for bad, why in checks if bad), "not an ISO-8601 date-time")


def _dtype_of(values: Sequence[Any] | np.ndarray) -> Any:
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64):
        return values.dtype
    return object


def _seconds(stamps: pd.Series) -> np.ndarray:
    """tz-aware stamps of any resolution → float64 seconds since the epoch (no int64-nanosecond wrap)."""
    micros = stamps.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]").astype(np.int64)
    return micros.to_numpy(dtype=np.float64) / 1e6


def to_unit(seconds: np.ndarray, unit: str) -> np.ndarray:
    """Seconds since the epoch → that many `unit`s (e.g. days) since the epoch."""
    if TIME_UNITS.get(unit, 0.0) <= 0.0:
        raise ValueError(f"time unit {unit!r} takes numeric times, not date-times")
    return seconds / TIME_UNITS[unit]


def from_seconds(seconds: np.ndarray) -> pd.Series:
    """float64 seconds since the epoch → UTC timestamps (microseconds)."""
    micros = np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)
    return pd.Series(micros.astype("datetime64[us]")).dt.tz_localize("UTC")
