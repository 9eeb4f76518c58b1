"""What a request will cost to solve, known before it is solved: the scheduler slices work by it and
admission refuses a request that could not finish in its share of the deadline.

Per model, a solve of B series with S latent samples takes about
    overhead + c_step × T + S × Σ_series (c_eval × evaluations + c_obs × observations + c_query × queries)
seconds (+ c_event × events × (observations + queries + S × evaluations where levels drive the field)
for a model with inputs: each event's compartments are summed at every such time), T the most
observations of a series in it: a fixed cost per solve and per encoder step (the
encoder walks the padded observations one step at a time, whatever the batch), then the solver's
vector-field evaluations, the encoder's rows and the readout (decoder and quantiles). A solve's
fixed cost is why a request of long series is cut into few slices: each slice holds at least
`FIXED_SHARE` times its fixed cost of work. The coefficients are measured once, when the model is
loaded, by timing solves that vary one thing at a time; the evaluations per trajectory are learned
per tolerance from the solves the server sees (seeded from the model's own tolerance by the method's
order: dopri5's steps grow as tolerance^(-1/5)). The coefficients are not relearned: on a loaded
machine every solve looks slow and small ones look slowest, which would have a large request refused
at ten times its cost. What the small timed solves miss (a large batch is slower per row: memory,
not arithmetic) is one factor per model, learned from the solves of `LARGE` seconds or more
(estimate × factor: admission only).

Slices are cut with the seeded evaluations (`units(..., learned=False)`), so a request is cut the
same way however busy the server has been and the same request gets the same answer (solving a
series in a batch of another size can move an adaptive step, within the solver's tolerance).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from latentcast.models import SolverConfig

_ORDER = {"dopri5": 5.0, "bosh3": 3.0}
FIXED_SHARE = 4.0  # a slice holds at least this many times its fixed cost of work
LARGE = 0.1  # solves estimated at this many seconds or more teach the correction factor
_FACTOR = (0.5, 8.0)  # bounds of the correction factor
_ALPHA = 0.2  # weight of a new observation in the average evaluations
_FACTOR_ALPHA = 0.5  # ... and in the correction factor: a machine that turns busy must show within two solves
_FLOOR_NFE = 8.0  # an adaptive solve takes at least one step of its stages


@dataclasses.dataclass
class _Model:
    overhead: float  # seconds per solve
    step: float  # seconds per encoder step of a solve (its most observations)
    coef: np.ndarray  # (3,) seconds per row-evaluation, per row-observation, per row-query
    nfe: dict[tuple[float, float], float]  # (rtol, atol) → evaluations per trajectory
    default: tuple[float, float]
    seeded_nfe: float
    factor: float = 1.0  # measured / estimated seconds of large solves
    event: float = 0.0  # seconds per event and time its compartments are summed at
    control: bool = False  # the model's levels drive its vector field: events cost at every evaluation


class CostModel:
    """Per model: the measured coefficients and the evaluations per trajectory by tolerance.
    Thread-safe: the event loop estimates, the inference thread learns."""

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    def seed(
        self,
        model: str,
        solver: SolverConfig,
        overhead: float,
        step: float,
        coef: np.ndarray,
        nfe: float,
        event: float = 0.0,
        control: bool = False,
    ) -> None:
        """A model's figures, measured when it is loaded at its own tolerance."""
        key = (solver.rtol, solver.atol)
        nfe = max(nfe, 1.0)
        with self._lock:
            self._models[model] = _Model(
                max(overhead, 0.0), max(step, 0.0), np.maximum(coef, 0.0), {key: nfe}, key, nfe,
                event=max(event, 0.0), control=control,
            )  # fmt: skip

    def nfe(self, model: str, solver: SolverConfig, learned: bool = True) -> float:
        """Evaluations per trajectory expected at `solver`'s tolerance (fixed steps: a fixed guess);
        learned=False: from the seeded figure alone."""
        if not solver.adaptive:
            return 4.0 * 64  # rk4's four stages per step; steps depend on the span (bounded by max_num_steps)
        m = self._models.get(model)
        if m is None:
            return 64.0
        key = (solver.rtol, solver.atol)
        with self._lock:
            if learned and key in m.nfe:
                return max(m.nfe[key], m.seeded_nfe if key == m.default else 0.0)  # never below the measured
            base = max(m.nfe[m.default], m.seeded_nfe) if learned else m.seeded_nfe
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
        learned: bool = True,
        n_ev: np.ndarray | None = None,
    ) -> np.ndarray:
        """(B,) seconds of work per series, beside the per-solve overhead; `n_ev` (B,): events per series."""
        m = self._models.get(model)
        coef = m.coef if m is not None else np.array([1e-6, 1e-6, 1e-6])
        nfe = self.nfe(model, solver, learned)
        per_row = coef[0] * nfe + coef[1] * n_obs.astype(np.float64) + coef[2] * n_q.astype(np.float64)
        units = max(samples, 1) * per_row
        if n_ev is not None and m is not None and m.event > 0:
            times = n_obs + n_q + (max(samples, 1) * nfe if m.control else 0.0)
            units = units + m.event * n_ev.astype(np.float64) * times
        return units

    def fixed(self, model: str, steps: int) -> float:
        """Seconds a solve costs whatever its rows: per solve, and per encoder step (`steps`: the most
        observations of a series in it)."""
        m = self._models.get(model)
        return (m.overhead + m.step * steps) if m is not None else 0.0

    def slice_units(self, model: str, seconds: float, steps: int) -> float:
        """The work one slice takes: about `seconds` with its fixed cost, and at least FIXED_SHARE times
        that fixed cost."""
        fixed = self.fixed(model, steps)
        return max(seconds - fixed, seconds / 2, FIXED_SHARE * fixed)

    def seconds(self, model: str, units: float, steps: int, slice_seconds: float, factor: bool = True) -> float:
        """Seconds `units` of work in series of at most `steps` observations take, cut in slices (with
        the correction factor large solves have taught, unless `factor` is False)."""
        slices = max(1.0, np.ceil(units / self.slice_units(model, slice_seconds, steps)))
        m = self._models.get(model)
        scale = m.factor if m is not None and factor else 1.0
        return float(units + slices * self.fixed(model, steps)) * scale

    def learn(self, model: str, solver: SolverConfig, nfe: float, estimated: float, seconds: float) -> None:
        """After a solve: the mean evaluations per trajectory it took at its tolerance; and, for a large
        one, how its seconds compare with its estimate (without the factor)."""
        m = self._models.get(model)
        if m is None:
            return
        with self._lock:
            if estimated >= LARGE and seconds > 0:
                ratio = min(max(seconds / estimated, _FACTOR[0]), _FACTOR[1])
                m.factor += _FACTOR_ALPHA * (ratio - m.factor)
            if nfe > 0 and solver.adaptive:
                key = (solver.rtol, solver.atol)
                old = m.nfe.get(key)
                m.nfe[key] = nfe if old is None else old + _ALPHA * (nfe - old)

    def describe(self, model: str) -> dict[str, float]:
        m = self._models.get(model)
        if m is None:
            return {}
        return {
            "overhead_s": m.overhead,
            "per_step_s": m.step,
            "per_row_evaluation_s": float(m.coef[0]),
            "per_row_observation_s": float(m.coef[1]),
            "per_row_query_s": float(m.coef[2]),
            "evaluations": m.seeded_nfe,
            "factor": m.factor,
            "per_event_time_s": m.event,
        }
