from __future__ import annotations

import pytest
import torch

from latentcast.models.dynamics import apply_mlp, mlp


@pytest.mark.parametrize("activation", ["elu", "tanh", "softplus", "silu", "relu"])
def test_apply_mlp_is_the_module_call_values_and_gradients(activation: str) -> None:
    torch.manual_seed(0)
    net = mlp(5, 16, 2, 3, activation)
    x = torch.randn(7, 5)
    first = net[0]
    assert isinstance(first, torch.nn.Linear)
    ref = net(x)
    got = apply_mlp(net, x)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), first.weight)
    (g_got,) = torch.autograd.grad(apply_mlp(net, x).square().sum(), first.weight)
    torch.testing.assert_close(g_got, g_ref)


def test_apply_mlp_reads_the_parameters_live() -> None:
    net = mlp(2, 4, 1, 1, "tanh")
    x = torch.ones(1, 2)
    before = apply_mlp(net, x)
    last = net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.bias.add_(1.0)  # an optimiser's in-place update
    torch.testing.assert_close(apply_mlp(net, x), before + 1.0)
    net.load_state_dict({k: torch.zeros_like(v) for k, v in net.state_dict().items()})
    assert float(apply_mlp(net, x).abs().max()) == 0.0
