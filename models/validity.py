"""What a model takes as a measurement: per-channel physical bounds and missing-value markers.

Both are part of the model: declared at training (`data.bounds`, `data.missing_values`, or `--bounds`,
`--missing-values`), stored in the checkpoint, shown by `GET /models`, and applied the same way in
training, in process and over HTTP:
- a missing-value marker is what a source writes for "unknown" (PhysioNet 2012's -1): read as not observed;
- a value outside a channel's physical bounds cannot be a measurement of it (a pH of 94, a temperature of
  -17.8 °C): it is set aside as not observed, and forecasts are clipped to the bounds.

Shapes: N rows, D channels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from latentcast.frames import DataError

ALL = "*"  # a key of `bounds` or `missing_values` that applies to every channel


@dataclasses.dataclass(frozen=True)
class Validity:
    """Per channel: bounds lower[j] ≤ value ≤ upper[j] (±inf: none) and markers missing[j] that mean
    "not observed". `source` says where the bounds come from."""

    channels: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    missing: tuple[tuple[float, ...], ...]
    source: str = ""

    def __post_init__(self) -> None:
        d = len(self.channels)
        if not len(self.lower) == len(self.upper) == len(self.missing) == d:
            raise DataError(f"validity: need bounds and markers for each of the {d} channels")
        for c, lo, hi in zip(self.channels, self.lower, self.upper, strict=True):
            if math.isnan(lo) or math.isnan(hi) or not lo < hi:
                raise DataError(f"bounds of channel {c!r}: need lower < upper, got [{lo:g}, {hi:g}]")
        for c, marks in zip(self.channels, self.missing, strict=True):
            if not all(math.isfinite(m) for m in marks):
                raise DataError(f"missing-value markers of channel {c!r} must be finite numbers, got {list(marks)}")

    @staticmethod
    def none(channels: Sequence[str]) -> Validity:
        d = len(channels)
        return Validity(tuple(channels), (-math.inf,) * d, (math.inf,) * d, ((),) * d)

    @staticmethod
    def from_config(
        bounds: Mapping[str, Sequence[float]],
        missing: Mapping[str, Sequence[float]],
        channels: Sequence[str],
        source: str = "",
    ) -> Validity:
        """From `data.bounds` (channel → [lower, upper]) and `data.missing_values` (channel → markers);
        the key "*" applies to every channel, a channel's own entry wins over it."""
        for what, table in (("data.bounds", bounds), ("data.missing_values", missing)):
            unknown = sorted(set(table) - set(channels) - {ALL})
            if unknown:
                raise DataError(f"{what}: {unknown} are not channels (the channels: {list(channels)})")
        every = bounds.get(ALL, (-math.inf, math.inf))
        pairs = [tuple(float(v) for v in bounds.get(c, every)) for c in channels]
        bad = [c for c, p in zip(channels, pairs, strict=True) if len(p) != 2]
        if bad:
            raise DataError(f"data.bounds: channel {bad[0]!r} needs [lower, upper] (inf for none)")
        marks = [tuple(float(v) for v in missing.get(c, missing.get(ALL, ()))) for c in channels]
        return Validity(tuple(channels), tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), tuple(marks), source)

    @property
    def bounded(self) -> bool:
        return any(math.isfinite(v) for v in (*self.lower, *self.upper))

    @property
    def has_markers(self) -> bool:
        return any(self.missing)

    def markers(self, values: np.ndarray) -> np.ndarray:
        """(N, D) True where a value is its channel's missing-value marker."""
        out = np.zeros(values.shape, dtype=bool)
        v = values.astype(np.float32, copy=False)  # compared at the model's precision, as the bounds are
        for j, marks in enumerate(self.missing):
            for m in marks:
                out[:, j] |= v[:, j] == np.float32(m)
        return out

    def outside(self, values: np.ndarray) -> np.ndarray:
        """(N, D) True where an observed value lies outside its channel's bounds (NaN: False)."""
        if not self.bounded:
            return np.zeros(values.shape, dtype=bool)
        v = values.astype(np.float32, copy=False)  # a bound of 1.1 admits float32(1.1) = 1.1000000238
        with np.errstate(invalid="ignore", over="ignore"):
            lo, hi = np.asarray(self.lower, dtype=np.float32), np.asarray(self.upper, dtype=np.float32)
            return (v < lo) | (v > hi)

    def clean(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) values with markers and out-of-bounds values as NaN (a copy when anything changes), and
        the (N, D) mask of the out-of-bounds ones that were set aside."""
        marked = self.markers(values) if self.has_markers else None
        if marked is not None and marked.any():
            values = np.where(marked, np.nan, values).astype(values.dtype, copy=False)
        out = self.outside(values)
        if out.any():
            values = np.where(out, np.nan, values).astype(values.dtype, copy=False)
        return values, out

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """(…, D) raw values clipped to the bounds (unchanged when there are none)."""
        if not self.bounded:
            return x
        lo = torch.as_tensor(self.lower, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(self.upper, dtype=x.dtype, device=x.device)
        return torch.minimum(torch.maximum(x, lo), hi)

    def describe(self) -> dict[str, Any]:
        """What `GET /models` shows: bounds of the bounded channels ([lower, upper], null: none), markers
        of the channels that have them, and the bounds' source."""
        bounds = {
            c: [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None]
            for c, lo, hi in zip(self.channels, self.lower, self.upper, strict=True)
            if math.isfinite(lo) or math.isfinite(hi)
        }
        marks = {c: list(m) for c, m in zip(self.channels, self.missing, strict=True) if m}
        return {"bounds": bounds, "missing_values": marks, "source": self.source}

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the checkpoint (±inf kept as floats: torch.save stores them)."""
        return {
            "channels": list(self.channels),
            "lower": list(self.lower),
            "upper": list(self.upper),
            "missing": [list(m) for m in self.missing],
            "source": self.source,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Validity:
        return Validity(
            tuple(d["channels"]),
            tuple(float(v) for v in d["lower"]),
            tuple(float(v) for v in d["upper"]),
            tuple(tuple(float(v) for v in m) for m in d["missing"]),
            str(d.get("source", "")),
        )


def parse_bounds(text: str) -> dict[str, tuple[float, float]]:
    """`--bounds "pH=6.3:10,Temp=14.2:47,HR=0:"` → {channel: (lower, upper)}; an empty side is unbounded."""
    out: dict[str, tuple[float, float]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, eq, rng = item.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            pair = (float(lo) if lo.strip() else -math.inf, float(hi) if hi.strip() else math.inf)
        except ValueError:
            pair = None
        if not eq or not colon or not name.strip() or pair is None:
            raise DataError(f"--bounds: {item!r} is not CHANNEL=LOWER:UPPER (e.g. pH=6.3:10, or HR=0: for no upper)")
        out[name.strip()] = pair
    return out


def parse_missing_values(text: str) -> dict[str, tuple[float, ...]]:
    """`--missing-values=-1,999` (every channel) or `"Height=-1,Weight=-1|999"` → {channel or "*": markers}."""
    out: dict[str, list[float]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, eq, marks = item.rpartition("=") if "=" in item else ("", "", item)
        key = name.strip() if eq else ALL
        try:
            out.setdefault(key, []).extend(float(m) for m in marks.split("|") if m.strip())
        except ValueError:
            raise DataError(
                f"--missing-values: {item!r} is not a number or CHANNEL=V1|V2 (e.g. -1, or Height=-1)"
            ) from None
    return {k: tuple(v) for k, v in out.items()}
