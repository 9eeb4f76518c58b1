from __future__ import annotations

import pytest
import torch
from torch import nn

from latentcast.layers import ODEBlock, SolverConfig
from latentcast.models.odeblock import ConvField


class _Linear(nn.Module):
    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h @ self.a.T


def test_the_block_is_the_flow_of_its_field_at_the_tolerance_asked() -> None:
    """dh/dt = A h: the block's output is expm(A t1) h; tighter tolerances cost more and land closer."""
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    h = torch.randn(5, 4, dtype=torch.float64)
    exact = h @ torch.linalg.matrix_exp(1.5 * a).T
    errors, nfes = [], []
    for tol in (1e-2, 1e-5, 1e-8):
        block = ODEBlock(_Linear(a), SolverConfig(rtol=tol, atol=tol), t1=1.5)
        with torch.no_grad():
            errors.append(float((block(h) - exact).abs().max()))
        nfes.append(block.nfe_forward)
    assert nfes[0] < nfes[1] < nfes[2] and errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


def test_the_adjoint_gives_backpropagations_gradients_and_counts_its_backward_solve() -> None:
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()

    class F(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = field

        def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return self.net(h)

    x = torch.randn(8, 3, dtype=torch.float64)
    grads, backward_nfe = [], []
    for adjoint in (False, True):
        block = ODEBlock(F(), SolverConfig(rtol=1e-9, atol=1e-10, adjoint=adjoint))
        block.zero_grad()
        block(x).square().sum().backward()
        backward_nfe.append(block.count_backward())
        grads.append(torch.cat([p.grad.flatten() for p in block.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert backward_nfe[0] == 0 and backward_nfe[1] > 0


def test_a_conv_field_keeps_the_feature_maps_shape_and_learns() -> None:
    torch.manual_seed(0)
    block = ODEBlock(ConvField(16), SolverConfig(rtol=1e-3, atol=1e-3, adjoint=True))
    x = torch.randn(4, 16, 8, 8)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and block.nfe_forward >= 6
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())
    with pytest.raises(ValueError, match="t1"):
        ODEBlock(ConvField(16), t1=0.0)
