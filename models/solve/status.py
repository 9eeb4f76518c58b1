"""Why a solve failed: a status per row, and the one place its wording lives."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Solver outcome per series. `describe()` says what happened, in words for whoever sent the series;
    `SolverError` adds what to change, in words for whoever configures the solver."""

    OK = 0
    MAX_STEPS = 1
    NONFINITE = 2
    DEADLINE = 3
    OUT_OF_RANGE = 4

    def describe(self) -> str:
        return _WHAT[self]


_WHAT = {
    Status.OK: "solved",
    Status.MAX_STEPS: "the solver needed more than its step limit (the horizon may be too long for this model)",
    Status.NONFINITE: "the forecast became non-finite (the dynamics blew up; check the values are in range)",
    Status.DEADLINE: "the deadline passed before the solve finished",
    Status.OUT_OF_RANGE: "the forecast left the range the model was trained on (more than its limit of training "
    "standard deviations from the training mean); shorten the horizon or check the inputs",
}
_ADVICE = {
    Status.MAX_STEPS: "the solve needed more than solver.max_num_steps={steps} steps; raise "
    "solver.max_num_steps, loosen solver.rtol/atol, or shorten the horizon",
    Status.NONFINITE: "the latent state became NaN/inf or the step size underflowed (the dynamics blew "
    "up); shorten the horizon or check the inputs are in the model's range",
    Status.DEADLINE: "the deadline passed before the solve finished; allow more time or send less work",
    Status.OUT_OF_RANGE: "the forecast left the model's trained range; shorten the horizon or check the inputs",
}


class SolverError(RuntimeError):
    """An ODE solve failed. `status` says why; `rows` lists the failing batch rows where known."""

    def __init__(self, status: Status, max_num_steps: int, rows: list[int] | None = None, detail: str = ""):
        self.status = status
        self.rows = rows or []
        self.reason = _ADVICE[status].format(steps=max_num_steps)
        super().__init__(self.reason + (f" ({detail})" if detail else ""))
