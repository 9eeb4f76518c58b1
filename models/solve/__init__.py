"""ODE solves, split the torchdiffeq way: one module per concern.

- `status`: `Status` per row and `SolverError`; the one place the failure wording lives.
- `grid`: `odeint_grid`, torchdiffeq on one shared grid (training).
- `tableaus`: Runge–Kutta coefficients.
- `step`: one batched step with per-row error control and dense output.
- `graphs`: `GraphCache`, CUDA graphs of the step, owned by whoever owns the model.
- `per_series`: `solve_per_series`, the inference driver.
"""

from latentcast.models.solve.graphs import GraphCache
from latentcast.models.solve.grid import odeint_grid
from latentcast.models.solve.per_series import EXEC_DEFAULTS, PerSeriesSolution, solve_per_series
from latentcast.models.solve.status import SolverError, Status
from latentcast.models.solve.tableaus import TABLEAUS

__all__ = [
    "EXEC_DEFAULTS",
    "TABLEAUS",
    "GraphCache",
    "PerSeriesSolution",
    "SolverError",
    "Status",
    "odeint_grid",
    "solve_per_series",
]
