"""Choices made from the training split alone, so that a long table trains well without flags: the
model's time scale, which channels to log, and which training values are gross entry errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from latentcast.models.data import Normalizer, Series
from latentcast.models.validity import Validity

TARGET_SPAN = 4.0  # model time units in a median training series (pbcseq in years: 3.7; spirals: 3.7)
SKEW_FOR_LOG = 1.0


def auto_time_scale(series: Sequence[Series]) -> float:
    """The scale that makes the median span of the series (with 2 or more points) TARGET_SPAN model
    time units; `series` in the data's own unit (scale 1)."""
    spans = np.array([s.times[-1] - s.times[0] for s in series if len(s) >= 2])
    spans = spans[spans > 0]
    if not spans.size:
        return 1.0
    return float(TARGET_SPAN / np.median(spans))


def _skew(x: np.ndarray) -> float:
    sd = x.std()
    return float(((x - x.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


def auto_log_channels(series: Sequence[Series], channels: Sequence[str]) -> tuple[str, ...]:
    """Channels to model on a log scale: every training value > 0, right-skewed (sample skewness above
    SKEW_FOR_LOG), and more symmetric after the log."""
    values = np.concatenate([s.values for s in series]).astype(np.float64)
    out = []
    for j, c in enumerate(channels):
        col = values[:, j][~np.isnan(values[:, j])]
        if col.size < 3 or (col <= 0).any():
            continue
        raw, logged = _skew(col), _skew(np.log(col))
        if raw > SKEW_FOR_LOG and abs(logged) < abs(raw):
            out.append(c)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Cleaned:
    """Series with their gross outliers set to not observed, how many per channel, and the first few as
    (series id, time, channel, value) so a report can name them."""

    series: list[Series]
    outliers: dict[str, int]
    examples: list[tuple[str, float, str, float]] = dataclasses.field(default_factory=list)


def _without(s: Series, drop: np.ndarray) -> Series | None:
    """`s` with the (n, D) values in `drop` not observed; rows left empty dropped (None: nothing left)."""
    values = np.where(drop, np.nan, s.values).astype(np.float32)
    keep = np.asarray(~np.isnan(values).all(axis=1), dtype=bool)
    if not keep.any():
        return None
    truth = s.truth[keep] if s.truth is not None else None
    n_ctx = None if s.n_context is None else int(keep[: s.n_context].sum()) or None
    return dataclasses.replace(s, times=s.times[keep], values=values[keep], truth=truth, n_context=n_ctx)


def apply_validity(series: Sequence[Series], validity: Validity) -> Cleaned:
    """Missing-value markers read as not observed, values outside the physical bounds set aside (counted
    per channel); rows and series left with nothing observed are dropped."""
    counts = dict.fromkeys(validity.channels, 0)
    if not validity.bounded and not validity.has_markers:
        return Cleaned(list(series), counts)
    out = []
    for s in series:
        marked = validity.markers(s.values) if validity.has_markers else np.zeros(s.values.shape, dtype=bool)
        outside = validity.outside(np.where(marked, np.nan, s.values))  # a marker is "unknown", not out of bounds
        drop = outside | marked
        if not drop.any():
            out.append(s)
            continue
        for j in np.flatnonzero(outside.any(axis=0)):
            counts[validity.channels[j]] += int(outside[:, j].sum())
        kept = _without(s, drop)
        if kept is not None:
            out.append(kept)
    return Cleaned(out, counts)


def drop_outliers(series: Sequence[Series], normalizer: Normalizer, z: float) -> Cleaned:
    """Values more than `z` scales from the training centre (after the log) become NaN (not observed);
    rows left with nothing observed are dropped, and series left empty. z = 0 keeps everything."""
    counts = dict.fromkeys(normalizer.channels, 0)
    if z <= 0:
        return Cleaned(list(series), counts)
    out = []
    examples: list[tuple[str, float, str, float]] = []
    for s in series:
        far = np.abs(normalizer.transform(s.values)) > z  # NaN compares False
        if not far.any():
            out.append(s)
            continue
        for j in np.flatnonzero(far.any(axis=0)):
            counts[normalizer.channels[j]] += int(far[:, j].sum())
        for r, j in zip(*np.nonzero(far), strict=True):
            if len(examples) < MAX_EXAMPLES:
                examples.append((s.id, float(s.times[r]), normalizer.channels[j], float(s.values[r, j])))
        kept = _without(s, far)
        if kept is not None:
            out.append(kept)
    return Cleaned(out, counts, examples)


MAX_EXAMPLES = 5  # outliers named in a report


# values data sources write for "unknown"; one that is frequent and far from a channel's data is suspect
COMMON_CODES = (-1.0, -9.0, -99.0, -999.0, -9999.0, 99.0, 999.0, 9999.0)


def suspect_codes(series: Sequence[Series], normalizer: Normalizer, share: float = 0.005) -> dict[str, list[float]]:
    """Per channel, the common "unknown" codes (COMMON_CODES) that make up at least `share` of its
    values (and 5 of them) while lying more than 5 of its scales from its centre: likely codes that
    were not declared (`data.missing_values`)."""
    if not series:
        return {}
    values = np.concatenate([s.values for s in series]).astype(np.float64)
    out: dict[str, list[float]] = {}
    for j, channel in enumerate(normalizer.channels):
        col = values[:, j][~np.isnan(values[:, j])]
        for code in COMMON_CODES:
            n = int((col == code).sum())
            if n >= max(5, share * col.size) and abs(float(normalizer.transform_one(code, j))) > 5:
                out.setdefault(channel, []).append(code)
    return out
