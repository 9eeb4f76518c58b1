"""The checks a forecast's input passes, in process and over HTTP: what the model cannot represent is
refused, what is unusual is answered with a warning, and every series gets its own verdict.

Refused (per series, the first reason): a non-finite time; a value beyond float32 or infinite; a value
≤ 0 on a log channel; timestamps that do not strictly increase; no observed value; observations
spanning, or queries lying, further than `Limits.max_horizon` from the observations.
Answered with a warning: a value outside its channel's physical bounds (set aside as not observed); a
value further than `Limits.unusual_scales` from the training data on the model's own scale. With
`Limits.strict` those are refused too. Missing-value markers are read as not observed, silently: the
model declares them.

Shapes: B series; N observations in all (series i owns rows offsets[i]:offsets[i + 1]); M query times
in all; D channels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from latentcast.frames import offsets
from latentcast.models.data import Normalizer, TimeSpec
from latentcast.models.inputs import InputSpec, PackedInputs, SeriesInputs
from latentcast.models.packed import PackedSeries
from latentcast.models.validity import Validity

_F32 = float(np.finfo(np.float32).max)
SHOWN = 3  # elements named in one warning; the rest are counted
# show(field, i, j): element j of series i's field as the client sent it, for messages
Show = Callable[[str, int, int], str]


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a model takes. max_horizon: model time; unusual_scales: normalised units (the model's own
    scale, after the log of log channels); strict: refuse what would be answered with a warning;
    entry_error_scales: values this far out (normalised units), which its training set aside as entry
    errors, are flagged too."""

    time: TimeSpec
    max_horizon: float = math.inf
    normalizer: Normalizer | None = None
    validity: Validity | None = None
    unusual_scales: float = math.inf
    strict: bool = False
    entry_error_scales: float = math.inf  # training set values this far out aside (data.outlier_z)

    def pack(
        self,
        ids: list[str],
        ts: np.ndarray,
        n_obs: np.ndarray,
        values: np.ndarray,
        tq: np.ndarray,
        n_q: np.ndarray,
        show: Show,
        positions: np.ndarray | None = None,
    ) -> Checked:
        """`pack` under these limits: the accepted series, the refusals and the warnings."""
        return pack(ids, ts, n_obs, values, tq, n_q, self, show, positions)


@dataclasses.dataclass(frozen=True)
class Issue:
    """Why series `series` (its index in the request) is refused, or what is unusual about it: element
    `index` of `field` (None: the field as a whole). `setting`: the limit involved ("max_horizon",
    "unusual_scales", "strict"), which callers name their own way; `status`: 422, or 413 for a size
    limit; `kind`: "invalid" for refusals, or a warning's kind ("out_of_bounds", "unusual_value",
    "unusual_forecast")."""

    series: int
    field: str
    index: int | None
    msg: str
    setting: str | None = None
    status: int = 422
    kind: str = "invalid"


@dataclasses.dataclass(frozen=True)
class Checked:
    """The accepted series packed in model time, with `positions` (B_ok,) their indices in the request
    and `origins` (B_ok,) the time (in the model's unit) each one's model time counts from; one `Issue`
    per refused series and the warnings of the accepted ones, each in request order."""

    packed: PackedSeries
    positions: np.ndarray
    origins: np.ndarray
    refused: list[Issue]
    warnings: list[Issue]

    def with_inputs(self, held: Sequence[SeriesInputs], limits: Limits, spec: InputSpec) -> Checked:
        """The accepted series with their inputs: `held` (B_ok,), one per accepted series, times in the
        model's unit. Event times are placed in model time as the observations were (from `origins`). A
        series given no static covariate, for a model that takes some, is answered with a warning, and so
        is one whose inputs lie outside the training inputs (`InputSpec.unusual`; refused when strict). Inputs the
        model cannot represent (`InputSpec.beyond`) are refused (422), the series' others answered."""
        beyond = [
            Issue(int(p), field, k, msg, status=422)
            for p, x in zip(self.positions.tolist(), held, strict=True)
            for field, k, msg in spec.beyond(x)[:1]
        ]
        cannot = {x.series for x in beyond}
        unusual = [
            Issue(int(p), field, k, msg, kind="unusual_value")
            for p, x in zip(self.positions.tolist(), held, strict=True)
            if int(p) not in cannot
            for field, k, msg in spec.unusual(x)[:1]  # the first of each series, as for its values
        ]
        checked, refused = self, [*self.refused, *beyond]
        strict = bool(limits.strict and unusual)  # refused instead, as an unusual value is
        if strict or beyond:
            bad = cannot | ({x.series for x in unusual} if strict else set())
            keep = [i for i, p in enumerate(self.positions.tolist()) if p not in bad]
            parts = [self.packed.take(i, i + 1) for i in keep]
            checked = dataclasses.replace(
                self,
                packed=PackedSeries.concat(parts) if parts else self.packed.take(0, 0),
                positions=self.positions[keep],
                origins=self.origins[keep],
                warnings=[w for w in self.warnings if w.series not in bad],
            )
            held = [held[i] for i in keep]
            if strict:
                refused += [dataclasses.replace(x, kind="invalid", setting="strict") for x in unusual]
                unusual = []
        moved = [
            dataclasses.replace(x, times=(x.times - o) * limits.time.scale)
            for x, o in zip(held, checked.origins.tolist(), strict=True)
        ]
        packed = PackedInputs.from_series(moved, len(spec.events), len(spec.static))
        names = np.asarray(spec.static)
        notes = [
            Issue(int(p), "static", None, f"no value given for {', '.join(names[np.isnan(x.static)])}: the training "
                  "mean is used", kind="missing_inputs")
            for p, x in zip(checked.positions.tolist(), moved, strict=True)
            if spec.static and np.isnan(x.static).any()
        ]  # fmt: skip
        return dataclasses.replace(
            checked,
            packed=dataclasses.replace(checked.packed, inputs=packed),
            refused=sorted(refused, key=lambda x: x.series),
            warnings=sorted([*checked.warnings, *notes, *unusual], key=lambda w: w.series),
        )


def _firsts(rows: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted flat indices `rows`: the series owning some (S,), the position in `rows` of each one's
    first (S,), and how many each owns (S,)."""
    if not rows.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    owner = np.searchsorted(offs, rows, side="right") - 1
    series, first, count = np.unique(owner, return_index=True, return_counts=True)
    return series, first, count


class _Verdicts:
    """Per series: the first refusal, and warnings; positions map to the request's indices."""

    def __init__(self, positions: np.ndarray):
        self.pos = positions
        self.bad: dict[int, Issue] = {}
        self.warn: dict[int, list[Issue]] = {}

    def refuse(self, i: int, field: str, j: int | None, msg: str, setting: str | None = None) -> None:
        if i not in self.bad:
            self.bad[i] = Issue(int(self.pos[i]), field, j, msg, setting)

    def refuse_first(
        self, rows: np.ndarray, offs: np.ndarray, field: str, msg: Callable[[int], str], setting: str | None = None
    ) -> None:
        """Refuse each series owning one of `rows` (sorted), for its first: msg(k), k indexing `rows`."""
        series, first, _ = _firsts(rows, offs)
        for i, k in zip(series.tolist(), first.tolist(), strict=True):
            if i not in self.bad:
                self.refuse(i, field, int(rows[k] - offs[i]), msg(k), setting)

    def summarise(
        self,
        rows: np.ndarray,
        offs: np.ndarray,
        head: Callable[[int], str],
        item: Callable[[int], str],
        kind: str,
        setting: str | None = None,
    ) -> None:
        """One warning per accepted series owning some of `rows` (sorted): head(count) and its first
        SHOWN elements, item(k) with k indexing `rows`."""
        series, first, count = _firsts(rows, offs)
        for i, k, n in zip(series.tolist(), first.tolist(), count.tolist(), strict=True):
            if i in self.bad:
                continue
            shown = "; ".join(item(k + m) for m in range(min(n, SHOWN))) + (" …" if n > SHOWN else "")
            issue = Issue(int(self.pos[i]), "values", int(rows[k] - offs[i]), f"{head(n)}: {shown}", setting, kind=kind)
            self.warn.setdefault(i, []).append(issue)


def pack(
    ids: list[str],
    ts: np.ndarray,
    n_obs: np.ndarray,
    values: np.ndarray,
    tq: np.ndarray,
    n_q: np.ndarray,
    limits: Limits,
    show: Show,
    positions: np.ndarray | None = None,
) -> Checked:
    """Check a request's series as flat arrays and pack the accepted ones in model time. ts (N,) / tq
    (M,): times in the model's time unit, absolute; values (N, D), NaN = not observed; n_obs / n_q (B,)
    per series; positions (B,): each series' index in the request (default: 0..B-1), for the issues.

    Every check runs over the whole request at once; only series that fail one are visited in Python.
    Rows with nothing observed are dropped after the ordering check; times become model time from each
    series' first observation (the dynamics are time-invariant)."""
    b, d = len(ids), values.shape[1]
    pos = np.arange(b) if positions is None else np.asarray(positions)
    n_obs, n_q = np.asarray(n_obs, dtype=np.int64), np.asarray(n_q, dtype=np.int64)
    empty = (n_obs == 0) | (n_q == 0)
    if empty.any():  # refused here; the rest is checked without them
        return _without_empty(ids, ts, n_obs, values, tq, n_q, limits, show, pos, empty)
    v = _Verdicts(pos)
    off, qoff = offsets(n_obs), offsets(n_q)
    for name, t, o in (("timestamps", ts, off), ("query_times", tq, qoff)):
        v.refuse_first(np.flatnonzero(~np.isfinite(t)), o, name, lambda k: "must be a finite number")
    values = _check_values(values, off, limits, v, d)
    with np.errstate(invalid="ignore"):
        gaps = np.diff(ts)
    gaps[off[1:-1] - 1] = np.inf  # differences across series boundaries do not count
    back = np.flatnonzero(gaps <= 0) + 1

    def not_after(k: int) -> str:
        i = int(np.searchsorted(off, back[k], side="right") - 1)
        j = int(back[k] - off[i])
        now, before = show("timestamps", i, j), show("timestamps", i, j - 1)
        note = _resolution_note(ts[back[k] - 1], ts[back[k]], limits.time) if now != before else ""
        return f"must be strictly increasing: [{j}] = {now} does not come after [{j - 1}] = {before}{note}"

    v.refuse_first(back, off, "timestamps", not_after)
    observed = ~np.isnan(values).all(axis=1)
    n_seen = np.add.reduceat(observed.astype(np.int64), off[:-1]) if b else np.zeros(0, dtype=np.int64)
    for i in np.flatnonzero(n_seen == 0).tolist():
        v.refuse(i, "values", None, "no observed value at all; a series needs at least one")
    origin = ts[off[:-1]]
    with np.errstate(invalid="ignore", over="ignore"):
        times = (ts - np.repeat(origin, n_obs)) * limits.time.scale  # NaN where a time is, in refused series
        queries = (tq - np.repeat(origin, n_q)) * limits.time.scale
        _check_horizon(times, queries, observed, off, qoff, limits, show, v)
    ok = np.ones(b, dtype=bool)
    ok[list(v.bad)] = False
    rows = np.repeat(ok, n_obs) & observed
    kept = np.flatnonzero(ok)
    packed = PackedSeries(
        ids=[ids[i] for i in kept.tolist()],
        times=times[rows],
        values=values[rows].astype(np.float32),
        offsets=offsets(n_seen[ok]),
        queries=queries[np.repeat(ok, n_q)],
        query_offsets=offsets(n_q[ok]),
    )
    return Checked(
        packed,
        v.pos[kept],
        origin[kept],
        [v.bad[i] for i in sorted(v.bad)],
        [w for i in sorted(v.warn) if i not in v.bad for w in v.warn[i]],
    )


def _without_empty(
    ids: list[str],
    ts: np.ndarray,
    n_obs: np.ndarray,
    values: np.ndarray,
    tq: np.ndarray,
    n_q: np.ndarray,
    limits: Limits,
    show: Show,
    pos: np.ndarray,
    empty: np.ndarray,
) -> Checked:
    """`pack` for a request in which the series marked `empty` have no timestamps or no query times."""
    keep = np.flatnonzero(~empty)
    rows, qs = np.repeat(~empty, n_obs), np.repeat(~empty, n_q)
    sub = pack(
        [ids[i] for i in keep.tolist()],
        ts[rows],
        n_obs[keep],
        values[rows],
        tq[qs],
        n_q[keep],
        limits,
        lambda f, i, j: show(f, int(keep[i]), j),
        pos[keep],
    )
    mine = [
        Issue(int(pos[i]), "timestamps" if n_obs[i] == 0 else "query_times", None, _EMPTY[n_obs[i] == 0])
        for i in np.flatnonzero(empty).tolist()
    ]
    return dataclasses.replace(sub, refused=sorted([*sub.refused, *mine], key=lambda x: x.series))


# why a series with no timestamps or no query times is refused
_EMPTY = {
    True: "must hold at least one time (an observation of a channel: rows with only event values are events)",
    False: "must hold at least one time",
}


def _resolution_note(a: float, b: float, time: TimeSpec) -> str:
    """Why two times the client may have sent as distinct compare equal: date-times resolve to the
    microsecond, and float64 holds about 16 digits of a time in the model's unit."""
    if a != b:
        return ""
    return (
        f" (the two are one time once converted to {time.unit}s: times less than a microsecond apart, or "
        f"closer than about {abs(a) * 2.2e-16:.2g} {time.unit}s at this magnitude, cannot be told apart)"
    )


def _check_values(values: np.ndarray, off: np.ndarray, limits: Limits, v: _Verdicts, d: int) -> np.ndarray:
    """values (N, D): refuse what cannot be represented (beyond float32; ≤ 0 on a log channel, whose
    log the model reads, whatever its bounds say), read markers as not observed, set aside out-of-bounds
    values and flag unusual ones (warnings, or refusals when strict). Returns the values the model sees
    (a copy where any changed)."""
    with np.errstate(invalid="ignore"):
        r, c = np.nonzero(np.abs(values) > _F32)  # inf too; NaN compares False
    v.refuse_first(r, off, "values", lambda k: f"[{c[k]}] = {values[r[k], c[k]]:.4g} is beyond float32 (±3.4e38)")
    norm, validity = limits.normalizer, limits.validity
    if validity is not None and validity.has_markers:
        marked = validity.markers(values)
        if marked.any():
            values = np.where(marked, np.nan, values)
    if norm is not None and any(norm.log):
        with np.errstate(invalid="ignore"):
            r, c = np.nonzero((values <= 0) & np.asarray(norm.log, dtype=bool))
        v.refuse_first(
            r,
            off,
            "values",
            lambda k: (
                f"[{c[k]}] = {values[r[k], c[k]]:.4g}: channel {norm.channels[c[k]]!r} is modelled on a log "
                "scale; values must be > 0 (a code for 'unknown' is declared at training: --missing-values)"
            ),
        )
    if validity is not None and validity.bounded:
        outside = validity.outside(values)
        r, c = np.nonzero(outside)

        def where(k: int) -> str:
            j = c[k]
            lo, hi = validity.lower[j], validity.upper[j]
            return f"{validity.channels[j]!r} = {values[r[k], j]:.6g} (bounds [{lo:g}, {hi:g}])"

        if limits.strict:
            v.refuse_first(
                r, off, "values", lambda k: f"[{c[k]}] = {where(k)} lies outside its physical bounds", "strict"
            )
        else:
            v.summarise(
                r,
                off,
                lambda n: (
                    f"{n} value{'s' if n > 1 else ''} outside the channel's physical bounds, set aside as not observed"
                ),
                lambda k: f"[{int(r[k] - off[np.searchsorted(off, r[k], side='right') - 1])}] {where(k)}",
                "out_of_bounds",
            )
        if r.size:
            values = np.where(outside, np.nan, values)
    if norm is not None and math.isfinite(limits.unusual_scales):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            z = np.abs(norm.transform(values, np.float64))
        unit, centre = norm.scale_words()
        cut, unusual = limits.entry_error_scales, limits.unusual_scales
        _flag_far(
            values, z, z > unusual, off, norm, limits.strict, v, "unusual_scales",
            lambda n: f"{n} value{'s' if n > 1 else ''} more than {unusual:g} {unit} from {centre} (unusual for this "
            "model; answered)",
            lambda x, zz: f"lies {zz:.3g} {unit} from {centre}; the limit is {unusual:g}",
        )  # fmt: skip
        if cut < unusual:  # nearer than that, yet beyond what the model's training kept: it never saw such values
            why = f"its training set values more than {cut:g} {unit} from {centre} aside as entry errors"
            with np.errstate(invalid="ignore"):
                beyond = (z > cut) & (z <= unusual)
            _flag_far(
                values, z, beyond, off, norm, limits.strict, v, None,
                lambda n: f"{n} value{'s' if n > 1 else ''} the model never learned from ({why}; answered, check them)",
                lambda x, zz: f"is a value the model never learned from: {why}",
            )  # fmt: skip
    return values


def _flag_far(
    values: np.ndarray,
    z: np.ndarray,
    far: np.ndarray,
    off: np.ndarray,
    norm: Normalizer,
    strict: bool,
    v: _Verdicts,
    setting: str | None,
    head: Callable[[int], str],
    refusal: Callable[[float, float], str],
) -> None:
    """Values (N, D) where `far` (N, D): a warning per series (kind "unusual_value", `head(count)` and the
    first few values with their distance `z`), or with `strict` a refusal (`refusal(value, z)`; the
    setting "strict" when `setting` is None)."""
    r, c = np.nonzero(far)

    def item(k: int) -> str:
        j = int(r[k] - off[np.searchsorted(off, r[k], side="right") - 1])
        logged = " (on the log scale)" if norm.log[c[k]] else ""
        return f"[{j}] {norm.channels[c[k]]!r} = {values[r[k], c[k]]:.6g}, {z[r[k], c[k]]:.3g} scales out{logged}"

    if strict:
        v.refuse_first(
            r,
            off,
            "values",
            lambda k: (
                f"[{c[k]}] = {values[r[k], c[k]]:.6g} (channel {norm.channels[c[k]]!r}) "
                + refusal(values[r[k], c[k]], z[r[k], c[k]])
            ),
            setting or "strict",
        )
    else:
        v.summarise(r, off, head, item, "unusual_value", setting)


def _check_horizon(
    times: np.ndarray,
    queries: np.ndarray,
    observed: np.ndarray,
    off: np.ndarray,
    qoff: np.ndarray,
    limits: Limits,
    show: Show,
    v: _Verdicts,
) -> None:
    """Refuse observations spanning more than max_horizon (model time), and queries further than that
    from a series' observations."""
    if len(off) < 2:
        return
    n_q = np.diff(qoff)
    lo = np.minimum.reduceat(np.where(observed, times, np.inf), off[:-1])  # (B,) every series has a row
    hi = np.maximum.reduceat(np.where(observed, times, -np.inf), off[:-1])
    time = limits.time
    unit = f"{time.unit}s" if time.unit != "unitless" else "time units"
    bound = min(limits.max_horizon, _F32)
    with np.errstate(invalid="ignore"):
        wide = np.flatnonzero(~(hi - lo <= bound) & np.isfinite(lo))  # NaN times: refused already
    for i in wide.tolist():
        v.refuse(
            i,
            "timestamps",
            None,
            f"the observations span {(hi[i] - lo[i]) / time.scale:.4g} {unit}; the limit is "
            f"{limits.max_horizon / time.scale:.4g}",
            "max_horizon",
        )
    seen = np.isfinite(lo)
    lo_q, hi_q = np.repeat(np.where(seen, lo, 0.0), n_q), np.repeat(np.where(seen, hi, 0.0), n_q)
    dist = np.maximum(np.maximum(lo_q - queries, queries - hi_q), 0.0)
    far = np.flatnonzero(~(dist <= bound) & np.repeat(seen, n_q))

    def msg(k: int) -> str:
        i = int(np.searchsorted(qoff, far[k], side="right") - 1)
        j = int(far[k] - qoff[i])
        return (
            f"{show('query_times', i, j)} lies {dist[far[k]] / time.scale:.4g} {unit} from the observations; the "
            f"limit is {limits.max_horizon / time.scale:.4g}"
        )

    v.refuse_first(far, qoff, "query_times", msg, "max_horizon")
