"""A request's work in model terms (`Job`), and the checks every wire format shares.

Each format (`service.formats`) flattens its body to arrays over its series, sets aside the series it
cannot read (an `Issue` each), and calls `build_job`: the model's checks (`latentcast.models.pack`)
give every other series its verdict. A request refuses every bad series at once (422 listing them, the
default `on_error: "raise"`), or answers the good ones and lists the rest (`on_error: "skip"`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from latentcast.frames import offsets
from latentcast.models import ConfigError, InputSpec, Issue, Limits, PackedSeries, SolverConfig, TimeSpec
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError, field_error

OnError = Literal["raise", "skip"]
ON_ERROR: tuple[OnError, ...] = ("raise", "skip")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What decoding and encoding need to know about a served model."""

    name: str
    version: str
    channels: tuple[str, ...]
    limits: Limits
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)  # the model's own
    inputs: InputSpec = dataclasses.field(default_factory=InputSpec)  # events and static covariates it takes

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def time(self) -> TimeSpec:
        return self.limits.time


# the settings behind an issue's limit, as messages name them (refusals / warnings)
_REFUSAL_SETTINGS = {
    "max_horizon": "LATENTCAST_MAX_HORIZON_FACTOR",
    "unusual_scales": "LATENTCAST_UNUSUAL_VALUE_SCALES; refused as LATENTCAST_WARNINGS_AS_ERRORS is true",
    "strict": "refused as LATENTCAST_WARNINGS_AS_ERRORS is true",
}
_WARNING_SETTINGS = {"unusual_scales": "LATENTCAST_UNUSUAL_VALUE_SCALES"}

# the formats' view of the server: a model by name (None: the default), 404 if not served
Lookup = Callable[[str | None], ModelSpec]


@dataclasses.dataclass(frozen=True)
class SpecLookup:
    """A `Lookup` over the served models' specs (picklable: decode processes get one)."""

    specs: dict[str, ModelSpec]
    default: str

    def __call__(self, name: str | None) -> ModelSpec:
        if name == "":
            raise ServiceError(
                422,
                f"model: an empty name; omit the field for the default model ({self.default!r}) or name one of "
                f"{sorted(self.specs)} (GET /models)",
                [{"loc": ["model"], "msg": "empty model name", "series_id": None}],
            )
        spec = self.specs.get(name if name is not None else self.default)
        if spec is None:
            raise ServiceError(
                404,
                f"unknown model {name!r}; served: {sorted(self.specs)} (GET /models)",
                [{"loc": ["model"], "msg": "unknown model", "series_id": None}],
            )
        return spec


@dataclasses.dataclass
class Echo:
    """The query times as the client sent them, for the answer: one list per series (JSON bodies) or
    one flat Arrow array (Arrow bodies); each form is derived from the other on demand."""

    query_offsets: np.ndarray
    lists: list[list[Any]] | None = None
    array: pa.Array | None = None

    def as_lists(self) -> list[list[Any]]:
        if self.lists is None:
            assert self.array is not None
            q = self.query_offsets.tolist()
            self.lists = [self.array.slice(a, z - a).to_pylist() for a, z in itertools.pairwise(q)]
        return self.lists

    def as_array(self) -> pa.Array:
        if self.array is None:
            flat = list(itertools.chain.from_iterable(self.as_lists()))
            try:
                self.array = pa.array(flat)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers in some series, date-times in others
                self.array = pa.array([str(v) for v in flat], pa.string())
        return self.array

    def take(self, series: np.ndarray) -> Echo:
        """The echo of these series (indices, ascending)."""
        counts = np.diff(self.query_offsets)[series]
        if self.lists is not None:
            return Echo(offsets(counts), lists=[self.lists[i] for i in series.tolist()])
        assert self.array is not None
        if len(series) == len(self.query_offsets) - 1:
            return self
        starts = self.query_offsets[series]
        rows = np.repeat(starts - offsets(counts)[:-1], counts) + np.arange(int(counts.sum()))
        return Echo(offsets(counts), array=self.array.take(pa.array(rows)))


@dataclasses.dataclass
class Job:
    """One request's work: its accepted series packed in model time (each series' times and queries
    measured from its first observation), the levels and samples asked for, the query times to echo;
    and, in request order, the series it refused and the warnings about the accepted ones (error
    items: loc, msg, series_id)."""

    model: ModelSpec
    packed: PackedSeries
    echo: Echo
    levels: tuple[float, ...]
    num_samples: int
    solver: SolverConfig | None = None  # what this request's solves use; None: the model's own
    n_series: int = 0  # in the request
    positions: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    refused: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    warnings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    on_error: OnError = "raise"
    request_id: str | None = None  # a request's own id, echoed (the Open Inference Protocol's "id")

    @property
    def solver_used(self) -> SolverConfig:
        return self.solver or self.model.solver

    # set by the batcher: seconds queued and solving, series in its batch, CUDA graphs captured meanwhile
    timing: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.packed)

    @property
    def points(self) -> int:
        """Observations + query times + events: what the job holds while it waits."""
        events = len(self.packed.inputs.times) if self.packed.inputs is not None else 0
        return len(self.packed.times) + len(self.packed.queries) + events

    @property
    def answer_values(self) -> int:
        """Numbers in its answer: query times × channels × (point + mean + quantiles + samples)."""
        return len(self.packed.queries) * self.model.n_channels * (2 + len(self.levels) + self.num_samples)

    def notes_bytes(self) -> int:
        """An upper bound on the bytes its errors and warnings take in an answer, known before solving: those
        found so far (escaped: twice their text), and per accepted series one forecast warning naming it."""
        found = sum(2 * (len(x["msg"].encode()) + len((x["series_id"] or "").encode())) + 128 for x in self.refused)
        found += sum(2 * (len(x["msg"].encode()) + len(x["series_id"].encode())) + 160 for x in self.warnings)
        ids = sum(len(i.encode()) for i in self.packed.ids)
        return found + 2 * ids + 400 * self.size  # a failed series' entry is smaller than its forecast


LEVELS = (1e-4, 1 - 1e-4)  # the mixture quantiles are solved to a CDF tolerance of 1e-5


def check_options(
    n_series: int,
    n_points: int,
    n_queries: int,
    n_channels: int,
    levels: Sequence[float],
    num_samples: int,
    settings: Settings,
) -> None:
    """Request-level limits (413) and options (422), before any per-series work. n_points: observations
    + query times; n_queries: query times (each answered with a value per channel, quantile, sample)."""
    if n_series > settings.max_series:
        raise ServiceError(
            413, f"{n_series} series; the limit is {settings.max_series} (LATENTCAST_MAX_SERIES): split the request"
        )
    if n_points > settings.max_total_points:
        raise ServiceError(
            413,
            f"{n_points} observations + query times (+ events); the limit per request is "
            f"{settings.max_total_points} (LATENTCAST_MAX_TOTAL_POINTS): split the request",
        )
    if len(levels) > settings.max_quantiles:
        raise field_error(
            422,
            f"{len(levels)} levels; the limit is {settings.max_quantiles} (LATENTCAST_MAX_QUANTILES)",
            ["quantiles"],
        )
    seen: set[float] = set()
    for j, level in enumerate(levels):
        if level in seen:
            raise field_error(422, f"{level} is repeated: ask for each level once", ["quantiles", j])
        seen.add(level)
        if not LEVELS[0] <= level <= LEVELS[1]:
            raise field_error(
                422,
                f"{level} is not in [{LEVELS[0]:g}, {LEVELS[1]:g}] (quantiles are solved to a CDF tolerance of "
                "1e-5, so levels nearer 0 or 1 cannot be told apart)",
                ["quantiles", j],
            )
    if num_samples > settings.max_num_samples:
        raise field_error(
            422,
            f"{num_samples} exceeds the limit {settings.max_num_samples} (LATENTCAST_MAX_NUM_SAMPLES)",
            ["num_samples"],
        )
    values = n_queries * n_channels * (1 + len(set(levels)) + num_samples)
    if values > settings.max_response_values:
        raise ServiceError(
            413,
            f"the answer would hold {values} numbers (query times × channels × (1 + quantiles + samples)); the "
            f"limit is {settings.max_response_values} (LATENTCAST_MAX_RESPONSE_VALUES): split the request or ask "
            "for fewer quantiles or samples",
        )


def solver_for(
    model: ModelSpec,
    level: str | None,
    rtol: float | None,
    atol: float | None,
    settings: Settings,
    loc: list[str | int],
) -> SolverConfig:
    """The model's solver at the accuracy a request asks for, within the server's bounds (422 naming
    the setting otherwise), its step budget capped by LATENTCAST_MAX_SOLVER_STEPS."""
    try:
        cfg = model.solver.at_accuracy(level, rtol, atol)
    except ConfigError as exc:
        raise field_error(422, str(exc), loc) from None
    named = level is not None and level != "default"  # a preset's tolerances are asked for as much as given ones
    for name, value, lo, hi in (
        ("rtol", cfg.rtol, settings.min_rtol, settings.max_rtol),
        ("atol", cfg.atol, settings.min_atol, settings.max_atol),
    ):
        if (named or (rtol if name == "rtol" else atol) is not None) and not lo <= value <= hi:
            env = f"LATENTCAST_MIN_{name.upper()}" if value < lo else f"LATENTCAST_MAX_{name.upper()}"
            what = (
                f"level {level!r} means {name} {value:g}, which"
                if named and name not in given(rtol, atol)
                else f"{value:g}"
            )
            raise field_error(422, f"{what} is outside [{lo:g}, {hi:g}] ({env})", [*loc, name])
    return dataclasses.replace(cfg, max_num_steps=min(cfg.max_num_steps, settings.max_solver_steps))


def given(rtol: float | None, atol: float | None) -> set[str]:
    return {n for n, v in (("rtol", rtol), ("atol", atol)) if v is not None}


def check_series(
    ids: Sequence[str], n_obs: np.ndarray, n_q: np.ndarray, positions: np.ndarray, settings: Settings
) -> list[Issue]:
    """Per series: a unique id (every series sharing one is refused: an answer by id would be
    ambiguous) and the per-series limits on observations and query times (413)."""
    issues: list[Issue] = []
    if len(set(ids)) != len(ids):
        where: dict[str, list[int]] = {}
        for k, sid in enumerate(ids):
            where.setdefault(sid, []).append(int(positions[k]))
        for group in where.values():  # linear: each message names at most 3 others
            if len(group) < 2:
                continue
            head = group[:4]
            for p in group:
                others = [q for q in head if q != p][:3]
                more = f" and {len(group) - 1 - len(others)} more" if len(group) - 1 > len(others) else ""
                also = ", ".join(f"series[{q}]" for q in others) + more
                issues.append(Issue(p, "id", None, f"duplicate id (also {also})"))
    for counts, limit, field, what, env in (
        (n_obs, settings.max_points, "timestamps", "observations", "LATENTCAST_MAX_POINTS"),
        (n_q, settings.max_query_times, "query_times", "query times", "LATENTCAST_MAX_QUERY_TIMES"),
    ):
        for k in np.flatnonzero(counts > limit).tolist():
            msg = f"{counts[k]} {what}; the limit is {limit} ({env})"
            issues.append(Issue(int(positions[k]), field, None, msg, status=413))
    return first_per_series(issues)


def check_inputs(
    model: ModelSpec,
    positions: np.ndarray,
    ev_t: np.ndarray,
    n_ev: np.ndarray,
    ev_v: np.ndarray,
    static: np.ndarray,
    settings: Settings,
) -> tuple[list[Any], list[Issue]]:
    """Each series' inputs from flat arrays (as a format read them): ev_t (K,) event times in the model's
    unit, n_ev (B,) events per series, ev_v (K, E) values (NaN: none of that kind), static (B, S) (NaN:
    unknown). An issue for a series that sends inputs a model does not take, more events than
    LATENTCAST_MAX_POINTS, or a time or value that is not finite."""
    spec, e, s = model.inputs, len(model.inputs.events), len(model.inputs.static)
    issues: list[Issue] = []
    off = offsets(n_ev)
    out = []
    for k, p in enumerate(positions.tolist()):
        a, z = int(off[k]), int(off[k + 1])
        t, v = ev_t[a:z], ev_v[a:z]
        if z > a and not spec.events:
            issues.append(Issue(p, "event_times", None, f"model {model.name!r} takes no events (GET /models)"))
        elif z - a > settings.max_points:
            msg = f"{z - a} events; the limit is {settings.max_points} (LATENTCAST_MAX_POINTS)"
            issues.append(Issue(p, "event_times", None, msg, status=413))
        elif not np.isfinite(t).all():
            issues.append(Issue(p, "event_times", int(np.flatnonzero(~np.isfinite(t))[0]), "must be a finite time"))
        elif _beyond_float32(v).any():
            j = int(np.flatnonzero(_beyond_float32(v).any(1))[0])
            issues.append(Issue(p, "event_values", j, f"must be finite and within ±{F32_MAX:.3g}, or null"))
        elif _beyond_float32(static[k]).any():
            j = int(np.flatnonzero(_beyond_float32(static[k]))[0])
            issues.append(Issue(p, "static", j, f"must be finite and within ±{F32_MAX:.3g}, or null"))
        order = np.argsort(t, kind="stable")
        out.append(spec.held(t[order], v[order].reshape(len(t), e), static[k, :s]))
    return out, issues


F32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32


def _beyond_float32(x: np.ndarray) -> np.ndarray:
    """Values (not NaN) that float32 cannot hold: infinite, or finite beyond its range."""
    return np.abs(np.nan_to_num(x, nan=0.0, posinf=np.inf, neginf=-np.inf)) > F32_MAX


def first_per_series(issues: Sequence[Issue]) -> list[Issue]:
    """The first issue of each series, in request order."""
    out: dict[int, Issue] = {}
    for issue in issues:
        out.setdefault(issue.series, issue)
    return [out[k] for k in sorted(out)]


def item(issue: Issue, ids: Sequence[str | None]) -> dict[str, Any]:
    """An issue as an error item of the answer: loc, msg (naming its setting), series_id."""
    loc: list[str | int] = ["series", issue.series, issue.field]
    if issue.index is not None:
        loc.append(issue.index)
    names = _REFUSAL_SETTINGS if issue.kind == "invalid" else _WARNING_SETTINGS
    setting = names.get(issue.setting or "")
    msg = issue.msg + (f" ({setting})" if setting else "")
    return {"loc": loc, "msg": msg, "series_id": ids[issue.series]}


def refusal(errors: list[dict[str, Any]], statuses: Sequence[int], n_series: int) -> ServiceError:
    """The answer to an all-or-nothing request with refused series: every one listed; 422, or 413 when
    only per-series size limits were passed."""
    first = field_error(422, errors[0]["msg"], errors[0]["loc"], errors[0]["series_id"]).detail
    if len(errors) > 1 or n_series > 1:
        first = (
            f"{len(errors)} of {n_series} series refused (send on_error=skip to have the others answered); "
            f"the first: {first}"
        )
    return ServiceError(422 if any(s != 413 for s in statuses) else 413, first, errors)


def build_job(
    model: ModelSpec,
    every_id: Sequence[str | None],
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    positions: np.ndarray,
    show: Callable[[str, int, int], str],
    pre: Sequence[Issue],
    echo: Echo,
    levels: tuple[float, ...],
    num_samples: int,
    solver: SolverConfig | None,
    on_error: OnError,
    inputs: Sequence[Any] | None = None,
) -> Job:
    """The model's checks over the series a format could read (`arrays`: ts, n_obs, values, tq, n_q;
    `positions` their request indices; `echo` their query times), with the issues the format found
    (`pre`). `inputs`: each of those series' events and statics (times in the model's unit), for a model
    that takes them. Raises the 422 listing every refused series unless on_error is "skip"."""
    ts, n_obs, values, tq, n_q = arrays
    ids = [str(every_id[p]) for p in positions.tolist()]  # the accepted series have string ids
    checked = model.limits.pack(ids, ts, n_obs, values, tq, n_q, show, positions)
    if model.inputs:
        local = np.searchsorted(positions, checked.positions).tolist()
        held = [inputs[i] for i in local] if inputs is not None else [model.inputs.none()] * len(local)
        checked = checked.with_inputs(held, model.limits, model.inputs)
    refused = sorted([*pre, *checked.refused], key=lambda x: x.series)
    errors = [item(x, every_id) for x in refused]
    if errors and on_error == "raise":
        raise refusal(errors, [x.status for x in refused], len(every_id))
    local = np.searchsorted(positions, checked.positions)
    return Job(
        model=model,
        packed=checked.packed,
        echo=echo.take(local),
        levels=levels,
        num_samples=num_samples,
        solver=solver,
        n_series=len(every_id),
        positions=checked.positions,
        refused=errors,
        warnings=[item(w, every_id) | {"kind": w.kind} for w in checked.warnings],
        on_error=on_error,
    )
