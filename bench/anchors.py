"""The reference solver approaches we compare against, on the anchor benchmark's shapes
(../shared/bench/anchor_solvers.py): GRU encoder over 50 observations × 3 channels, latent 16, MLP
dynamics 16→64→64→16 (ELU), linear decoder, 50 query times per series over horizons up to 2 time
units, dopri5 rtol 1e-3 atol 1e-4. Our own implementation of the same methods, so that they run in
the same process, on the same device, with the same weights as our path.

  A  torchdiffeq, one series at a time
  B  torchdiffeq on the union of the batch's query times
  C  torchode, per-series times and steps
  D  fixed-step RK4 (64 steps) over the longest horizon, replayed as a CUDA graph on GPUs
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchdiffeq import odeint

LATENT, HIDDEN, CHANNELS, N_OBS, N_QUERY = 16, 64, 3, 50, 50
RTOL, ATOL = 1e-3, 1e-4


def make_inputs(b: int, device: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """t_obs (B, 50) sorted in [0, 1], x (B, 50, 3), query times (B, 50) in (1, 1 + h], h ∈ [1, 2]."""
    t_obs = torch.sort(torch.rand(b, N_OBS, generator=gen), 1).values
    x = torch.randn(b, N_OBS, CHANNELS, generator=gen)
    horizon = 1 + torch.rand(b, 1, generator=gen)
    tq = 1 + torch.sort(torch.rand(b, N_QUERY, generator=gen), 1).values * horizon
    return t_obs.to(device), x.to(device), tq.to(device)


class AnchorModel(nn.Module):
    """Encoder GRU over [x, Δt] reversed, z0 = first 16 hidden units; f; linear decoder."""

    def __init__(self, f: nn.Module, dec: nn.Module, gru: nn.GRU):
        super().__init__()
        self.f, self.dec, self.gru = f, dec, gru

    def encode(self, t_obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dt = torch.diff(t_obs, dim=1, prepend=t_obs[:, :1]).unsqueeze(-1)
        _, h = self.gru(torch.cat([x, dt], -1).flip(1))
        return h[0, :, :LATENT]

    def field(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.f(z)


@torch.inference_mode()
def one_at_a_time(m: AnchorModel, t_obs: torch.Tensor, x: torch.Tensor, tq: torch.Tensor) -> torch.Tensor:
    outs = []
    for i in range(x.shape[0]):
        z0 = m.encode(t_obs[i : i + 1], x[i : i + 1])
        t = torch.cat([torch.ones(1, device=tq.device), tq[i]])
        zs = odeint(m.field, z0, t, rtol=RTOL, atol=ATOL)
        outs.append(m.dec(zs[1:, 0]))
    return torch.stack(outs)


@torch.inference_mode()
def union_grid(m: AnchorModel, t_obs: torch.Tensor, x: torch.Tensor, tq: torch.Tensor) -> torch.Tensor:
    z0 = m.encode(t_obs, x)
    b, q = tq.shape
    t_all, inv = torch.unique(torch.cat([torch.ones(1, device=tq.device), tq.flatten()]), return_inverse=True)
    zs = odeint(m.field, z0, t_all, rtol=RTOL, atol=ATOL)  # (T, B, L)
    z_q = zs[inv[1:].view(b, q), torch.arange(b, device=tq.device)[:, None]]
    return m.dec(z_q)


@torch.inference_mode()
def with_torchode(m: AnchorModel, t_obs: torch.Tensor, x: torch.Tensor, tq: torch.Tensor) -> torch.Tensor:
    import torchode as to

    z0 = m.encode(t_obs, x)
    t_eval = torch.cat([torch.ones(tq.shape[0], 1, device=tq.device), tq], 1)
    term = to.ODETerm(lambda t, z: m.f(z))
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=ATOL, rtol=RTOL, term=term))
    sol = solver.solve(to.InitialValueProblem(y0=z0, t_eval=t_eval))
    return m.dec(sol.ys[:, 1:])


def rk4_graph(
    m: AnchorModel, t_obs: torch.Tensor, x: torch.Tensor, tq: torch.Tensor, steps: int = 64
) -> Callable[[], torch.Tensor]:
    """RK4 on `steps` fixed steps over [1, max query time], linear interpolation to the query times;
    captured once as a CUDA graph on GPUs (the launch-overhead floor), eager elsewhere."""
    b = x.shape[0]
    h = (tq.max() - 1) / steps

    def body() -> torch.Tensor:
        z = m.encode(t_obs, x)
        traj = [z]
        for _ in range(steps):
            k1 = m.f(z)
            k2 = m.f(z + h / 2 * k1)
            k3 = m.f(z + h / 2 * k2)
            k4 = m.f(z + h * k3)
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            traj.append(z)
        grid = torch.stack(traj)  # (S + 1, B, L)
        pos = ((tq - 1) / h).clamp(0, steps - 1e-4)
        lo = pos.floor().long()
        w = (pos - lo).unsqueeze(-1)
        ar = torch.arange(b, device=x.device)[:, None]
        return m.dec(grid[lo, ar] * (1 - w) + grid[lo + 1, ar] * w)

    with torch.inference_mode():
        if x.device.type != "cuda":
            return body
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = body()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay
