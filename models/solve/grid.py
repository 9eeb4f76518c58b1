"""The training path: torchdiffeq (optionally its adjoint) on one shared time grid for a whole batch;
every series of a batch is solved on the union of the batch's times. torchdiffeq's failures (asserts
and RuntimeErrors) become a typed `SolverError` here."""

from __future__ import annotations

import torch
from torchdiffeq import odeint, odeint_adjoint

from latentcast.models.config import SolverConfig
from latentcast.models.solve.status import SolverError, Status


def _odeint_options(cfg: SolverConfig) -> dict[str, object]:
    if cfg.adaptive:
        return {
            "method": cfg.method,
            "rtol": cfg.rtol,
            "atol": cfg.atol,
            "options": {"max_num_steps": cfg.max_num_steps},
        }
    return {"method": cfg.method, "options": {"step_size": cfg.step_size}}


def odeint_grid(func: torch.nn.Module, z0: torch.Tensor, t: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:
    """Solve from z0 at time 0 to every time in `t`.

    func(t, z) → dz/dt. z0: (B, …), e.g. (B, L) latent states or (B, C, H, W) feature maps. t: (T,)
    strictly increasing, any sign. Returns (B, T, …).
    Negative times are reached by integrating backwards from 0.
    """
    if t.ndim != 1 or (t.numel() > 1 and not bool((t[1:] > t[:-1]).all())):
        raise ValueError("odeint_grid: t must be 1-D and strictly increasing")
    if not cfg.adaptive:
        span = float(t.abs().max()) if t.numel() else 0.0
        if span / cfg.step_size > cfg.max_num_steps:
            raise SolverError(Status.MAX_STEPS, cfg.max_num_steps, detail=f"fixed steps over span {span:.3g}")
    kwargs = _odeint_options(cfg)
    parts = []
    zero = torch.zeros(1, dtype=t.dtype, device=t.device)
    for side in (t[t < 0].flip(0), t[t >= 0]):
        if side.numel() == 0:
            continue
        has_zero = bool(side[0] == 0)
        grid = side if has_zero else torch.cat([zero, side])
        if grid.numel() == 1:  # only t = 0 asked
            parts.append((side, z0.unsqueeze(1)))
            continue
        try:
            if cfg.adjoint:
                zs = odeint_adjoint(
                    func,
                    z0,
                    grid,
                    adjoint_params=tuple(func.parameters()),
                    adjoint_options=kwargs["options"],
                    **kwargs,
                )
            else:
                zs = odeint(func, z0, grid, **kwargs)
        except AssertionError as exc:  # torchdiffeq signals limits and blow-ups with asserts
            msg = str(exc)
            status = Status.MAX_STEPS if "max_num_steps" in msg else Status.NONFINITE
            raise SolverError(status, cfg.max_num_steps, detail=msg[:200]) from exc
        except RuntimeError as exc:  # fixed-grid solvers: "Reached maximum number of iterations"
            if "maximum number" not in str(exc):
                raise
            raise SolverError(Status.MAX_STEPS, cfg.max_num_steps, detail=str(exc)[:200]) from exc
        zs = zs.transpose(0, 1)  # (B, len(grid), L)
        if not has_zero:
            zs = zs[:, 1:]
        parts.append((side, zs))
    if len(parts) == 2:  # negative side was solved in decreasing time: flip back to increasing
        out = torch.cat([parts[0][1].flip(1), parts[1][1]], dim=1)
    elif parts and bool(parts[0][0][0] < 0):
        out = parts[0][1].flip(1)
    else:
        out = parts[0][1] if parts else z0.new_zeros(z0.shape[0], 0, z0.shape[1])
    if not bool(torch.isfinite(out).all()):
        bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten().tolist()
        raise SolverError(Status.NONFINITE, cfg.max_num_steps, rows=bad)
    return out
