"""Continuous-depth layers (Chen et al. 2018), as a library: PyTorch modules whose depth is an ODE solve
on latentcast's solvers (torchdiffeq underneath, tolerance and the adjoint per layer).

    from latentcast.layers import ODEBlock, ConvField, SolverConfig

    block = ODEBlock(ConvField(64), SolverConfig(rtol=1e-3, atol=1e-3, adjoint=True))
    y = block(x)                          # x: (B, 64, H, W) → y: (B, 64, H, W) = h(1), dh/dt = f(t, h)
    y.sum().backward()
    block.nfe_forward, block.count_backward()   # evaluations of f, forward and backward

- `ODEBlock(func, solver=None, t1=1.0)`: h ↦ h(t1) with dh/dt = func(t, h), h(0) = h, for any input
  shape (B, …) that `func` (an `nn.Module` called as func(t, h), t a 0-d tensor) maps to itself. With
  `solver.adjoint` gradients come from the adjoint ODE solved backwards, so training memory does not
  grow with the number of steps (bench/results/adjoint.md).
- `ConvField(channels, groups=8)`: the paper's image field f(t, h), (B, C, H, W) → (B, C, H, W): norm →
  ReLU → 3×3 conv → norm → ReLU → 3×3 conv, t an extra input channel of each conv.
- `SolverConfig(method="dopri5", rtol, atol, adjoint, …)`: the solver of a layer.

The ODE-Net of the paper's Table 1 is built from these in `bench/odenet.py` (bench/results/odenet.md).
"""

from latentcast.models.config import SolverConfig
from latentcast.models.odeblock import ConvField, ODEBlock

__all__ = ["ConvField", "ODEBlock", "SolverConfig"]
