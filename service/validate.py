"""A request's work in model terms (`Job`), and the checks every wire format shares.

Each format (`service.formats`) flattens its body to arrays over all series, then calls
`check_options`, `check_series` and `packed`; the array checks themselves are the model's
(`latentcast.models.pack`), and a failure becomes a `ServiceError` naming the series id and field.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from latentcast.models import ConfigError, FieldError, Normalizer, PackedSeries, SolverConfig, TimeSpec, pack
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError, field_error


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What decoding and encoding need to know about a served model."""

    name: str
    version: str
    channels: tuple[str, ...]
    time: TimeSpec
    max_horizon: float  # model time
    normalizer: Normalizer | None = None  # with max_sigmas: how far from the training data values may lie
    max_sigmas: float = math.inf
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)  # the model's own

    @property
    def n_channels(self) -> int:
        return len(self.channels)


_SETTINGS = {"max_horizon": "LATENTCAST_MAX_HORIZON_FACTOR", "max_sigmas": "LATENTCAST_MAX_VALUE_SIGMAS"}

# the formats' view of the server: a model by name (None: the default), 404 if not served
Lookup = Callable[[str | None], ModelSpec]


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


@dataclasses.dataclass
class Job:
    """One request's work: its series packed in model time (each series' times and queries measured
    from its first observation), the levels and samples asked for, and the query times to echo."""

    model: ModelSpec
    packed: PackedSeries
    echo: Echo
    levels: tuple[float, ...]
    num_samples: int
    solver: SolverConfig | None = None  # what this request's solves use; None: the model's own

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
        """Observations + query times: what the job holds while it waits."""
        return len(self.packed.times) + len(self.packed.queries)

    @property
    def answer_values(self) -> int:
        """Numbers in its answer: query times × channels × (1 + quantiles + samples)."""
        return len(self.packed.queries) * self.model.n_channels * (1 + len(self.levels) + self.num_samples)


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
            f"{n_points} observations + query times; the limit per request is "
            f"{settings.max_total_points} (LATENTCAST_MAX_TOTAL_POINTS): split the request",
        )
    if len(levels) > settings.max_quantiles:
        raise field_error(
            422,
            f"{len(levels)} levels; the limit is {settings.max_quantiles} (LATENTCAST_MAX_QUANTILES)",
            ["quantiles"],
        )
    for j, level in enumerate(levels):
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
    for name, value, lo, hi in (
        ("rtol", cfg.rtol, settings.min_rtol, settings.max_rtol),
        ("atol", cfg.atol, settings.min_atol, settings.max_atol),
    ):
        if (rtol if name == "rtol" else atol) is not None and not lo <= value <= hi:
            env = f"LATENTCAST_MIN_{name.upper()}" if value < lo else f"LATENTCAST_MAX_{name.upper()}"
            raise field_error(422, f"{value:g} is outside [{lo:g}, {hi:g}] ({env})", [*loc, name])
    return dataclasses.replace(cfg, max_num_steps=min(cfg.max_num_steps, settings.max_solver_steps))


def check_series(ids: Sequence[str], n_obs: np.ndarray, n_q: np.ndarray, settings: Settings) -> None:
    """Unique ids; per-series limits on observations and query times (413)."""
    if len(set(ids)) != len(ids):
        seen: dict[str, int] = {}
        for i, sid in enumerate(ids):
            if sid in seen:
                raise field_error(422, f"duplicate id (also series[{seen[sid]}])", ["series", i, "id"], sid)
            seen[sid] = i
    for counts, limit, field, what, env in (
        (n_obs, settings.max_points, "timestamps", "observations", "LATENTCAST_MAX_POINTS"),
        (n_q, settings.max_query_times, "query_times", "query times", "LATENTCAST_MAX_QUERY_TIMES"),
    ):
        over = np.flatnonzero(counts > limit)
        if over.size:
            i = int(over[0])
            raise field_error(413, f"{counts[i]} {what}; the limit is {limit} ({env})", ["series", i, field], ids[i])


def packed(
    ids: list[str],
    ts: np.ndarray,
    n_obs: np.ndarray,
    values: np.ndarray,
    tq: np.ndarray,
    n_q: np.ndarray,
    model: ModelSpec,
    show: Any,
) -> PackedSeries:
    """`latentcast.models.pack` (the shared array checks), its `FieldError` as a 422."""
    try:
        return pack(
            ids, ts, n_obs, values, tq, n_q, model.time, model.max_horizon, show, model.normalizer, model.max_sigmas
        )
    except FieldError as exc:
        msg = exc.msg + (f" ({_SETTINGS[exc.limit]})" if exc.limit else "")
        loc: list[str | int] = ["series", exc.series, exc.field]
        if exc.index is not None:
            loc.append(exc.index)
        raise field_error(422, msg, loc, ids[exc.series]) from None
