"""What an answer says about each series of a request: the forecasts of the answered ones, their
warnings, and every refused series with its reason. One home for the policy after the solve, so both
formats (and the metrics) say the same."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from latentcast.models import PackedForecast, Status
from latentcast.service.batching import deadline_error
from latentcast.service.errors import ServiceError
from latentcast.service.validate import Echo, Job


@dataclasses.dataclass
class Outcome:
    """fc: the answered series' forecasts, echo: their query times as sent; warnings: per answered
    series, its warnings; errors: the refused series (input and solver), in request order."""

    fc: PackedForecast
    echo: Echo
    warnings: list[list[dict[str, Any]]]
    errors: list[dict[str, Any]]

    @property
    def warning_count(self) -> int:
        return sum(map(len, self.warnings))


def outcome(job: Job, fc: PackedForecast, unusual_scales: float) -> Outcome:
    """The solve's statuses under the request's policy: 504 when its deadline stopped it; series the
    solver could not answer refused (all-or-nothing: a 422 naming every one); answers further than
    `unusual_scales` (normalised units) from the training data reported as warnings."""
    failed = np.flatnonzero(fc.status != Status.OK)
    if failed.size and (fc.status == Status.DEADLINE).any():
        raise deadline_error()
    unusual = {int(w["loc"][1]): w["msg"] for w in job.warnings if w.get("kind") == "unusual_value"}

    def reason(i: int) -> str:
        """The solver's message, with the series' unusual values where they are the likely cause."""
        msg = Status(int(fc.status[i])).describe()
        seen = unusual.get(int(job.positions[i]))
        return msg if seen is None else f"{msg}; likely cause, its values far from the training data: {seen}"

    solver_errors = [
        {"loc": ["series", int(job.positions[i])], "msg": reason(i), "series_id": fc.ids[i]} for i in failed.tolist()
    ]
    if solver_errors and job.on_error == "raise":
        ids = ", ".join(repr(f["series_id"]) for f in solver_errors[:5]) + (" …" if len(solver_errors) > 5 else "")
        raise ServiceError(422, f"no forecast for series {ids}: {solver_errors[0]['msg']}", solver_errors)
    answered = np.flatnonzero(fc.status == Status.OK)
    positions = job.positions[answered]
    by_series: dict[int, list[dict[str, Any]]] = {}
    for w in job.warnings:
        by_series.setdefault(int(w["loc"][1]), []).append(w)
    kept = fc.select(answered)
    norm = job.model.limits.normalizer
    unit, centre = norm.scale_words() if norm is not None else ("training scales", "the training data")
    for k in np.flatnonzero(kept.far > unusual_scales).tolist():
        pos = int(positions[k])
        channel = job.model.channels[int(kept.far_channel[k])]
        by_series.setdefault(pos, []).append(
            {
                "loc": ["series", pos, "forecast"],
                "msg": f"the answer for channel {channel!r} lies {kept.far[k]:.3g} {unit} from {centre}, beyond "
                f"{unusual_scales:g} (LATENTCAST_UNUSUAL_OUTPUT_SCALES): an extrapolation far from the training data",
                "series_id": kept.ids[k],
                "kind": "unusual_forecast",
            }
        )
    errors = sorted([*job.refused, *solver_errors], key=lambda e: int(e["loc"][1]))
    return Outcome(kept, job.echo.take(answered), [by_series.get(int(p), []) for p in positions], errors)
