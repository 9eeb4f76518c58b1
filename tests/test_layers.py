"""latentcast.layers: the continuous-depth layers as a library, used as its docstring shows."""

from __future__ import annotations

import torch

from latentcast.layers import ConvField, ODEBlock, SolverConfig


def test_the_documented_example_runs_with_the_adjoint() -> None:
    torch.manual_seed(0)
    block = ODEBlock(ConvField(8), SolverConfig(rtol=1e-3, atol=1e-3, adjoint=True))
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert block.nfe_forward > 0 and block.count_backward() > 0  # the adjoint solved f backwards


def test_a_linear_field_gives_the_matrix_exponential() -> None:
    """dh/dt = A h from h(0) = h: h(1) = exp(A) h, for any (B, …) shape the field keeps."""
    a = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=torch.float64)

    class Linear(torch.nn.Module):
        def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return h @ a.T

    block = ODEBlock(Linear(), SolverConfig(rtol=1e-9, atol=1e-10))
    h = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(block(h), h @ torch.linalg.matrix_exp(a).T, rtol=1e-7, atol=1e-8)
