"""Times as users send them: numbers in a unit, or ISO-8601 date-times. The one place they are parsed.

Date-times become float64 seconds since the Unix epoch (UTC; a string without an offset is taken as
UTC). Parsing is strict: only ISO-8601 strings (`2026-01-03`, `2026-01-03T08:30`, `…:00.5Z`,
`…+02:00`), datetime64 values or datetime objects. Empty strings, "NaT", "nan", "now" and "today",
which pandas would otherwise accept, are refused, and so is any year outside 0001–9999. No torch here:
the HTTP client uses this module too.
"""

from __future__ import annotations

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
}

ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}"  # date
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"  # time of day, optional seconds and fraction
    r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?"  # UTC offset
)
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


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
    """Date-times → (N,) float64 seconds since the Unix epoch, UTC. Raises `TimeParseError` naming the
    first element that is not a strict ISO-8601 date-time (or a datetime value)."""
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
                        raise TimeParseError(
                            i, v, "not an ISO-8601 date-time (e.g. 2026-01-03 or 2026-01-03T08:30:00Z)"
                        )
                elif not isinstance(v, dt.datetime | np.datetime64) or pd.isna(v):
                    raise TimeParseError(i, v, "not an ISO-8601 date-time string")
        try:
            col = pd.to_datetime(col, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            for i, v in enumerate(col):  # find the first one that fails, for the message
                try:
                    pd.to_datetime(pd.Series([v], dtype=object), utc=True, format="ISO8601")
                except (ValueError, TypeError, OverflowError):
                    raise TimeParseError(i, v, "not a calendar date-time (month, day or hour out of range)") from None
            raise TimeParseError(0, col[0], "not valid date-times") from None
    missing = np.flatnonzero(col.isna().to_numpy())
    if missing.size:
        i = int(missing[0])
        raise TimeParseError(i, values[i] if not isinstance(values, pd.Series) else None, "missing date-time")
    return _seconds(col if isinstance(col.dtype, pd.DatetimeTZDtype) else col.dt.tz_localize("UTC"))


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
