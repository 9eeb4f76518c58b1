"""Latent dynamics f(t, z): an MLP vector field, integrated by `models.solve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from latentcast.models.config import ModelConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
}


# the functional form of each activation module (same defaults), for `apply_mlp`
_FUNCTIONAL: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ELU: F.elu,
    nn.Tanh: torch.tanh,
    nn.Softplus: F.softplus,
    nn.SiLU: F.silu,
    nn.ReLU: F.relu,
}


def mlp(n_in: int, hidden: int, depth: int, n_out: int, activation: str) -> nn.Sequential:
    """n_in → [hidden, activation] × depth → n_out."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def apply_mlp(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """net(x) for an `mlp`, layer by layer through torch.nn.functional: no per-module call dispatch (hooks
    are not run), which is most of the cost of the tiny evaluations a solve makes step after step."""
    for layer in net._modules.values():  # read straight from the module dicts: always the live parameters
        params = layer._parameters
        x = F.linear(x, cast(torch.Tensor, params["weight"]), params["bias"]) if params else _FUNCTIONAL[type(layer)](x)
    return x


class Dynamics(nn.Module):
    """dz/dt = f(t, z). z: (R, L + S), the latent state and S constant inputs (their derivative is 0): the
    static channels, and the static covariates where they enter the dynamics (`n_static`, default
    len(cfg.static_channels)); t: scalar or (R,) (used by `time_input` and the control). With `n_control`
    the field also reads u(t) = control(t, R) (R, n_control), a callable its model sets for the length of
    a solve (`LatentODE.controlled`). Counts calls in `nfe`."""

    def __init__(self, cfg: ModelConfig, n_static: int | None = None, n_control: int = 0):
        super().__init__()
        self.time_input = cfg.time_input
        self.n_static = len(cfg.static_channels) if n_static is None else n_static
        self.n_control = n_control
        self.control: Callable[[torch.Tensor, int], torch.Tensor] | None = None
        n_in = cfg.latent_dim + self.n_static + n_control + int(cfg.time_input)
        self.net = mlp(n_in, cfg.dynamics_hidden, cfg.dynamics_depth, cfg.latent_dim, cfg.activation)
        self.nfe = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.n_control:
            if self.control is None:
                raise RuntimeError("these dynamics read the model's inputs: solve them inside LatentODE.controlled")
            u = self.control(torch.as_tensor(t, dtype=z.dtype, device=z.device), z.shape[0])  # (R, U)
            z = torch.cat([z, u], dim=-1)
        if self.time_input:
            tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[0])  # (R,)
            z = torch.cat([z, tt[:, None]], dim=-1)  # (R, L + S + 1)
        dz = apply_mlp(self.net, z)  # (R, L)
        return torch.cat([dz, dz.new_zeros(dz.shape[0], self.n_static)], dim=-1) if self.n_static else dz
