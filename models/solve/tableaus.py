"""Explicit Runge–Kutta tableaus, as numbers (`TABLEAUS`) and as tensors for the step (`matrices`)."""

from __future__ import annotations

import dataclasses
import functools

import torch


@dataclasses.dataclass(frozen=True)
class Tableau:
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # a[i] is the row of stage i+1 (stage 0 has none)
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None  # b - b_hat for adaptive methods
    order: int  # order used by the step-size controller's exponent
    fsal: bool  # last stage is evaluated at the step's end point
    dense: tuple[tuple[float, ...], ...] | None = None  # dopri5: per-stage coefficients of θ..θ⁴


_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_BHAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_BOSH3_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
_BOSH3_BHAT = (7 / 24, 1 / 4, 1 / 3, 1 / 8)

TABLEAUS: dict[str, Tableau] = {
    "dopri5": Tableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            _DOPRI5_B[:6],
        ),
        b=_DOPRI5_B,
        b_err=tuple(x - y for x, y in zip(_DOPRI5_B, _DOPRI5_BHAT, strict=True)),
        order=5,
        fsal=True,
        # Dormand–Prince continuous extension (4th order): y(θ) = y0 + h Σ_i k_i Σ_j dense[i][j] θ^(j+1)
        dense=(
            (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
            (0.0, 0.0, 0.0, 0.0),
            (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
            (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
            (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
            (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
            (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
        ),
    ),
    "bosh3": Tableau(
        c=(0.0, 1 / 2, 3 / 4, 1.0),
        a=((1 / 2,), (0.0, 3 / 4), _BOSH3_B[:3]),
        b=_BOSH3_B,
        b_err=tuple(x - y for x, y in zip(_BOSH3_B, _BOSH3_BHAT, strict=True)),
        order=3,
        fsal=True,
    ),
    "rk4": Tableau(
        c=(0.0, 1 / 2, 1 / 2, 1.0),
        a=((1 / 2,), (0.0, 1 / 2), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        b_err=None,
        order=4,
        fsal=False,
    ),
    "midpoint": Tableau(c=(0.0, 1 / 2), a=((1 / 2,),), b=(0.0, 1.0), b_err=None, order=2, fsal=False),
    "euler": Tableau(c=(0.0,), a=(), b=(1.0,), b_err=None, order=1, fsal=False),
}

# Execution knobs per device type (see solve_per_series; results never depend on them):


@dataclasses.dataclass(frozen=True)
class Matrices:
    """A tableau as tensors: a[i] (i + 1,) weights of stage i + 1; b (n,); e (n,) error weights or None;
    dense (n_ext, 4): dense-output coefficients over the stage derivatives (plus f at the step's end for
    methods that do not evaluate it as their last stage)."""

    a: list[torch.Tensor]
    b: torch.Tensor
    e: torch.Tensor | None
    dense: torch.Tensor


@functools.lru_cache(maxsize=32)
def matrices(method: str, device: torch.device, dtype: torch.dtype) -> Matrices:
    tab = TABLEAUS[method]
    n = len(tab.c)
    n_ext = n if tab.fsal else n + 1

    def vec(values: tuple[float, ...], size: int) -> torch.Tensor:
        return torch.tensor(list(values) + [0.0] * (size - len(values)), dtype=dtype, device=device)

    if tab.dense is not None:  # dopri5's own 4th-order continuous extension
        dense = torch.tensor(tab.dense, dtype=dtype, device=device)
    else:  # cubic Hermite through (y0, f0), (y1, f1): y(θ) = y0 + h Σ_j c_j θ^(j+1), with Δ/h = Σ b_i k_i
        b = vec(tab.b, n_ext)
        f0 = vec((1.0,), n_ext)
        f1 = torch.zeros(n_ext, dtype=dtype, device=device)
        f1[n_ext - 1] = 1.0
        dense = torch.stack([f0, 3 * b - 2 * f0 - f1, -2 * b + f0 + f1, torch.zeros_like(b)], dim=1)
    return Matrices(
        a=[vec(row, i + 1) for i, row in enumerate(tab.a)],
        b=vec(tab.b, n),
        e=vec(tab.b_err, n) if tab.b_err is not None else None,
        dense=dense,
    )
