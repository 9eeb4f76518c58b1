"""The CUDA-graph solve path on a real GPU (run with `pytest -m gpu` on a machine that has one)."""

from __future__ import annotations

import gc

import pytest
import torch

from latentcast.models.config import SolverConfig
from latentcast.models.solve import solve_per_series

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.net(z)

    return Field().cuda()


def test_graph_replay_matches_eager_across_shapes_and_modules() -> None:
    g = torch.Generator().manual_seed(0)
    cfg = SolverConfig(rtol=1e-5, atol=1e-7)
    for seed in range(3):  # new modules, possibly at a freed module's address
        f = _mlp(seed)
        for b, q in [(1, 3), (5, 7), (7, 5), (100, 50), (1000, 13)]:
            z0 = torch.randn(b, 4, generator=g).cuda()
            t = ((torch.rand(b, q, generator=g) - 0.2) * 3).cuda()
            with torch.inference_mode():
                eager = solve_per_series(f, z0, t, cfg, graphs=False)
                graph = solve_per_series(f, z0, t, cfg, graphs=True)
            torch.testing.assert_close(graph.z, eager.z, rtol=1e-5, atol=1e-6)
            assert torch.equal(graph.steps, eager.steps)
            assert torch.equal(graph.status, eager.status)
        del f
        gc.collect()
        torch.cuda.empty_cache()


def test_graph_replay_with_a_linear_readout_matches_eager() -> None:
    """The readout's product is captured with the step; a new readout is not served an old graph."""
    g = torch.Generator().manual_seed(1)
    cfg = SolverConfig(rtol=1e-5, atol=1e-7)
    f = _mlp(0)
    for out_features in (3, 2):
        torch.manual_seed(out_features)
        lin = torch.nn.Linear(4, out_features).cuda()
        for b, q in [(5, 7), (100, 50)]:
            z0 = torch.randn(b, 4, generator=g).cuda()
            t = ((torch.rand(b, q, generator=g) - 0.2) * 3).cuda()
            with torch.inference_mode():
                after = lin(solve_per_series(f, z0, t, cfg, graphs=False).z)
                graph = solve_per_series(f, z0, t, cfg, graphs=True, readout=lin)
            assert graph.z.shape == (b, q, out_features)
            torch.testing.assert_close(graph.z, after, rtol=1e-5, atol=1e-5)
