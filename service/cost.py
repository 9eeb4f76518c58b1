"""What a request will cost to solve, known before it is solved: the scheduler slices work by it and
admission refuses a request that could not finish in its share of the deadline.

Work is counted in row-evaluations: per series, latent samples × (vector-field evaluations + its
observations + its query times × (1 + channels / 8)), the encoder's and the readout's steps (the
decoder and the quantiles grow with the channels) beside the solver's. Two
things are learned from the solves the server sees, per model: the seconds one unit takes on this
device (an exponential average, seeded by a timed warm-up solve), and the vector-field evaluations per
trajectory at each tolerance (seeded from the model's own by the method's order: dopri5's steps grow as
tolerance^(-1/5)).

Slices are cut by the seeded figures alone (`slice_units`, `units(..., learned=False)`), which stay put
for the life of the process: a request is cut the same way however busy the server has been, so the
same request gets the same answer (solving a series in a batch of another size can move an adaptive
step, within the solver's tolerance). Admission uses the learned figures.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

from latentcast.models import SolverConfig

_ORDER = {"dopri5": 5.0, "bosh3": 3.0}
_ALPHA = 0.2  # weight of a new observation in the averages
_FLOOR_NFE = 8.0  # an adaptive solve takes at least one step of its stages


@dataclasses.dataclass
class _Model:
    seconds_per_unit: float
    nfe: dict[tuple[float, float], float]  # (rtol, atol) → evaluations per trajectory
    default: tuple[float, float]
    seeded_nfe: float
    seeded_rate: float


class CostModel:
    """Per model: seconds per unit of work and evaluations per trajectory by tolerance. Thread-safe:
    the event loop estimates, the inference thread learns."""

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    def seed(self, model: str, solver: SolverConfig, seconds_per_unit: float, nfe: float) -> None:
        """A model's first figures (from a timed warm-up solve at its own tolerance)."""
        key = (solver.rtol, solver.atol)
        rate, nfe = max(seconds_per_unit, 1e-9), max(nfe, 1.0)
        with self._lock:
            self._models[model] = _Model(rate, {key: nfe}, key, nfe, rate)

    def nfe(self, model: str, solver: SolverConfig, learned: bool = True) -> float:
        """Evaluations per trajectory expected at `solver`'s tolerance (fixed steps: known exactly);
        learned=False: from the seeded figure alone."""
        if not solver.adaptive:
            return 4.0 * 64  # rk4's four stages per step; steps depend on the span (bounded by max_num_steps)
        m = self._models.get(model)
        if m is None:
            return 64.0
        key = (solver.rtol, solver.atol)
        with self._lock:
            if learned and key in m.nfe:
                return m.nfe[key]
            base = m.nfe[m.default] if learned else m.seeded_nfe
        order = _ORDER.get(solver.method, 5.0)
        ratio = (m.default[0] / solver.rtol) ** (1.0 / order)  # steps ∝ tolerance^(-1/order)
        return max(_FLOOR_NFE, base * ratio)

    def units(
        self,
        model: str,
        solver: SolverConfig,
        samples: int,
        n_obs: np.ndarray,
        n_q: np.ndarray,
        channels: int,
        learned: bool = True,
    ) -> np.ndarray:
        """(B,) units of work per series: samples × (evaluations + observations + query times × (1 + D/8))."""
        readout = n_q.astype(np.float64) * (1.0 + channels / 8.0)
        return max(samples, 1) * (self.nfe(model, solver, learned) + n_obs.astype(np.float64) + readout)

    def slice_units(self, model: str, seconds: float) -> float:
        """The units `seconds` of work took when the model was seeded: a slice's size, fixed for the process."""
        m = self._models.get(model)
        return seconds / (m.seeded_rate if m is not None else 1e-6)

    def seconds(self, model: str, units: float) -> float:
        """Seconds `units` of work take on this device (the latest average)."""
        m = self._models.get(model)
        return units * (m.seconds_per_unit if m is not None else 1e-6)

    def learn(self, model: str, solver: SolverConfig, units: float, seconds: float, nfe: float) -> None:
        """After a solve: its units and seconds, and the mean evaluations per trajectory it took."""
        m = self._models.get(model)
        if m is None or units <= 0 or not math.isfinite(seconds):
            return
        key = (solver.rtol, solver.atol)
        with self._lock:
            m.seconds_per_unit += _ALPHA * (seconds / units - m.seconds_per_unit)
            if nfe > 0 and solver.adaptive:
                old = m.nfe.get(key)
                m.nfe[key] = nfe if old is None else old + _ALPHA * (nfe - old)

    def rate(self, model: str) -> float:
        m = self._models.get(model)
        return m.seconds_per_unit if m is not None else float("nan")
