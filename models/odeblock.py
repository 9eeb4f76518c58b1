"""ODEBlock: a residual block of continuous depth (Chen et al. 2018, §3), on the project's solver.

A ResNet block maps h ↦ h + f(h); an ODE block maps h(0) ↦ h(T) where dh/dt = f(t, h), integrated
by `models.solve.odeint_grid` (torchdiffeq), so its depth is however many evaluations of f the solver
takes at its tolerance. With `SolverConfig(adjoint=True)` gradients come from the adjoint ODE solved
backwards: training memory does not grow with the number of steps.

    block = ODEBlock(ConvField(64), SolverConfig(rtol=1e-3, atol=1e-3, adjoint=True))
    y = block(x)                      # x: (B, 64, H, W) → (B, 64, H, W)
    loss(y).backward(); block.nfe_forward, block.count_backward()
"""

from __future__ import annotations

import torch
from torch import nn

from latentcast.models.config import SolverConfig
from latentcast.models.solve.grid import odeint_grid


class _Counted(nn.Module):
    """f(t, h) that counts its evaluations."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, h)


class ODEBlock(nn.Module):
    """h ↦ h(t1) with dh/dt = func(t, h), h(0) = h. Any shape (B, …) that `func` maps to itself.

    `nfe_forward`: evaluations of func in the last forward pass. `count_backward()`, called after
    `loss.backward()`, gives those of the backward pass (0 without the adjoint: backpropagation then
    goes through the solver's own operations).
    """

    def __init__(self, func: nn.Module, solver: SolverConfig | None = None, t1: float = 1.0):
        super().__init__()
        if t1 <= 0:
            raise ValueError(f"ODEBlock: t1 must be > 0 (the block's depth in time), got {t1}")
        self.field = _Counted(func)
        self.solver = solver or SolverConfig(rtol=1e-3, atol=1e-3)
        self.t1 = t1
        self.nfe_forward = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([0.0, self.t1], dtype=h.dtype, device=h.device)
        self.field.calls = 0
        out = odeint_grid(self.field, h, t, self.solver)[:, -1]  # (B, 2, …) → h(t1)
        self.nfe_forward = self.field.calls
        return out

    def count_backward(self) -> int:
        """Evaluations of func since the last forward pass ended: its backward pass's."""
        return self.field.calls - self.nfe_forward


class ConvField(nn.Module):
    """The paper's image ODE-Net's f(t, h): norm → ReLU → 3×3 conv → norm → ReLU → 3×3 conv, with t as
    an extra input channel of each conv. (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        g = min(groups, channels)
        self.norm1 = nn.GroupNorm(g, channels)
        self.conv1 = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(g, channels)
        self.conv2 = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.norm3 = nn.GroupNorm(g, channels)

    def _with_t(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(h[:, :1]) * t  # (B, 1, H, W)
        return torch.cat([tt, h], dim=1)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self._with_t(t, torch.relu(self.norm1(h))))
        out = self.conv2(self._with_t(t, torch.relu(self.norm2(out))))
        return self.norm3(out)
