"""Solvers against problems with exact solutions, failure modes, and batch invariance."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from latentcast.models.config import SolverConfig
from latentcast.models.solve import TABLEAUS, SolverError, Status, odeint_grid, solve_per_series

# Damped rotation: z' = A z, exact z(t) = exp(A t) z0, for any sign of t.
A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)


def linear(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return z @ A.T


def exact(z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z0 (B, 2), t (B, Q) → (B, Q, 2)."""
    expm = torch.linalg.matrix_exp(A * t[..., None, None])  # (B, Q, 2, 2)
    return (expm @ z0[:, None, :, None]).squeeze(-1)


# method → (settings, tolerance on the max abs error)
METHODS: dict[str, tuple[dict[str, Any], float]] = {
    "dopri5": (dict(rtol=1e-7, atol=1e-9), 1e-6),
    "bosh3": (dict(rtol=1e-6, atol=1e-8), 5e-5),
    "rk4": (dict(step_size=0.01), 1e-8),
    "midpoint": (dict(step_size=0.005), 5e-5),
    "euler": (dict(step_size=2e-3), 2e-2),
}


def problem(b: int = 5, q: int = 7):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(b, 2, generator=g, dtype=torch.float64)
    t = (torch.rand(b, q, generator=g, dtype=torch.float64) - 0.3) * 8  # before and after the anchor
    t[0] = 0.0  # a series asking only for t = 0
    t[1, 3] = t[1, 2]  # repeated query
    return z0, t


@pytest.mark.parametrize("method", list(METHODS))
def test_per_series_matches_exact_solution(method: str) -> None:
    kw, tol = METHODS[method]
    z0, t = problem()
    sol = solve_per_series(linear, z0, t, SolverConfig(method=method, max_num_steps=100_000, **kw))
    assert sol.status.tolist() == [0] * 5
    assert (sol.z - exact(z0, t)).abs().max() < tol
    assert torch.equal(sol.z[0], z0[0].expand(7, 2))  # t = 0 is z0 exactly


@pytest.mark.parametrize("method", list(METHODS))
def test_grid_wrapper_matches_exact_solution(method: str) -> None:
    kw, tol = METHODS[method]
    z0, _ = problem()
    t = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.5], dtype=torch.float64)
    zs = odeint_grid(_Module(), z0, t, SolverConfig(method=method, max_num_steps=100_000, **kw))
    assert zs.shape == (5, 5, 2)
    assert (zs - exact(z0, t.expand(5, -1))).abs().max() < tol * 10


class _Module(torch.nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return linear(t, z)


def test_dense_output_is_fourth_order() -> None:
    """Halving the tolerance-driven step should shrink interpolation error ~16× between steps."""
    z0, t = problem()
    errs = []
    for rtol in (1e-4, 1e-4 / 2**5):
        sol = solve_per_series(linear, z0, t, SolverConfig(rtol=rtol, atol=rtol * 1e-2))
        errs.append(float((sol.z - exact(z0, t)).abs().max()))
    assert errs[1] < errs[0] / 8


def test_queries_in_any_order_are_answered_in_order() -> None:
    z0, t = problem()
    perm = torch.randperm(t.shape[1])
    cfg = SolverConfig(rtol=1e-8, atol=1e-10)
    a = solve_per_series(linear, z0, t, cfg).z
    b = solve_per_series(linear, z0, t[:, perm], cfg).z
    torch.testing.assert_close(a[:, perm], b)


@pytest.mark.parametrize(("window", "sync_every"), [(1, 1), (2, 3), (8, 1), (64, 8), (20, 1000)])
def test_result_does_not_depend_on_the_execution_knobs(window: int, sync_every: int) -> None:
    z0, t = problem(q=20)
    ref = solve_per_series(linear, z0, t, SolverConfig(), window=20, sync_every=1)
    sol = solve_per_series(linear, z0, t, SolverConfig(), window=window, sync_every=sync_every)
    torch.testing.assert_close(sol.z, ref.z, rtol=0, atol=1e-12)
    assert torch.equal(sol.steps, ref.steps)
    assert torch.equal(sol.status, ref.status)


def test_batch_invariance_is_exact_per_row() -> None:
    z0, t = problem(b=9)
    together = solve_per_series(linear, z0, t, SolverConfig())
    for i in range(9):
        alone = solve_per_series(linear, z0[i : i + 1], t[i : i + 1], SolverConfig())
        torch.testing.assert_close(alone.z[0], together.z[i], rtol=1e-12, atol=1e-12)


def blowup(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return z**2  # z(t) = z0 / (1 - z0 t): infinite at t = 1/z0


def test_blow_up_is_reported_per_series_not_for_the_batch() -> None:
    z0 = torch.tensor([[1.0], [0.1]], dtype=torch.float64)  # row 0 blows up at t = 1, row 1 at t = 10
    t = torch.tensor([[2.0], [2.0]], dtype=torch.float64)
    sol = solve_per_series(blowup, z0, t, SolverConfig(max_num_steps=500))
    assert sol.status[0] != Status.OK
    assert sol.status[1] == Status.OK
    torch.testing.assert_close(sol.z[1, 0, 0], torch.tensor(0.1 / (1 - 0.2), dtype=torch.float64), rtol=1e-3, atol=0)
    with pytest.raises(SolverError, match=r"max_num_steps|NaN") as info:
        sol.raise_on_failure(500)
    assert info.value.rows == [0]


def test_max_num_steps_is_a_typed_error_naming_the_setting() -> None:
    z0, t = problem()
    sol = solve_per_series(linear, z0, t * 100, SolverConfig(method="rk4", step_size=0.1, max_num_steps=50))
    assert (sol.status[1:] == Status.MAX_STEPS).all()
    with pytest.raises(SolverError, match=r"solver\.max_num_steps=50"):
        sol.raise_on_failure(50)
    with pytest.raises(SolverError, match="max_num_steps"):
        odeint_grid(
            _Module(),
            z0,
            torch.tensor([0.0, 1000.0], dtype=torch.float64),
            SolverConfig(rtol=1e-9, atol=1e-12, max_num_steps=5),
        )


def test_grid_wrapper_converts_blow_up() -> None:
    class Blow(torch.nn.Module):
        def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return z**2

    with pytest.raises(SolverError):
        odeint_grid(
            Blow(),
            torch.ones(1, 1, dtype=torch.float64),
            torch.tensor([0.0, 2.0], dtype=torch.float64),
            SolverConfig(max_num_steps=200),
        )


def test_non_finite_query_times_are_refused() -> None:
    z0, t = problem()
    t[2, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        solve_per_series(linear, z0, t, SolverConfig())


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("graphs", [False, True])
def test_linear_readout_inside_the_solve_equals_the_readout_after_it(method: str, graphs: bool) -> None:
    """A linear decoder commutes with the dense output: interpolating its K outputs instead of the L
    latent values gives the same answers (queries before and after the anchor, repeats, t = 0), and a
    second readout on the same vector field is not served the first one's cached graph."""
    f = _Module()
    cfg = SolverConfig(method=method, max_num_steps=5000, step_size=0.05)
    g = torch.Generator().manual_seed(1)
    for out_features in (3, 1):
        lin = torch.nn.Linear(2, out_features, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(out_features, 2, generator=g, dtype=torch.float64))
            lin.bias.copy_(torch.randn(out_features, generator=g, dtype=torch.float64))
        for b, q in [(5, 7), (9, 13)]:
            z0, t = problem(b=b, q=q)
            with torch.no_grad():
                after = lin(solve_per_series(f, z0, t, cfg, graphs=graphs).z)
                inside = solve_per_series(f, z0, t, cfg, graphs=graphs, readout=lin)
            assert inside.z.shape == (b, q, out_features)
            torch.testing.assert_close(inside.z, after, rtol=0, atol=1e-12)


class _Blowup(torch.nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z**2


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_padded_graph_path_matches_eager_and_reuses_its_buffers(method: str) -> None:
    """The CUDA-graph path (rows and queries padded to buckets, static buffers reused across calls) run
    eagerly on the CPU: same answers, steps and statuses as the plain path, call after call."""
    f = _Module()
    cfg = SolverConfig(method=method, max_num_steps=5000, step_size=0.05)
    for b, q in [(5, 7), (7, 5), (3, 7), (9, 13)]:  # the first three share one bucket (8 rows × 8 queries)
        z0, t = problem(b=b, q=q)
        eager = solve_per_series(f, z0, t, cfg, graphs=False)
        padded = solve_per_series(f, z0, t, cfg, graphs=True)
        torch.testing.assert_close(padded.z, eager.z, rtol=0, atol=1e-12)
        assert torch.equal(padded.steps, eager.steps)
        assert torch.equal(padded.status, eager.status)
    blow = _Blowup()
    z0 = torch.tensor([[1.0], [0.1]], dtype=torch.float64)
    t = torch.tensor([[2.0], [2.0]], dtype=torch.float64)
    sol = solve_per_series(blow, z0, t, SolverConfig(max_num_steps=500), graphs=True)
    assert sol.status[0] != Status.OK
    assert sol.status[1] == Status.OK


@pytest.mark.parametrize("graphs", [False, True])
def test_a_row_past_its_deadline_stops_and_the_others_are_unchanged(graphs: bool) -> None:
    z0, t = problem(b=5)  # row 0 asks only for t = 0: nothing to solve, nothing to stop
    now = time.monotonic()
    deadline = torch.tensor([now - 1.0, now - 1.0, now + 60.0, now - 1.0, now + 60.0], dtype=torch.float64)
    cut = solve_per_series(linear, z0, t, SolverConfig(), graphs=graphs, deadline=deadline)
    full = solve_per_series(linear, z0, t, SolverConfig(), graphs=graphs)
    assert cut.status.tolist() == [Status.OK, Status.DEADLINE, Status.OK, Status.DEADLINE, Status.OK]
    torch.testing.assert_close(cut.z[2::2], full.z[2::2], rtol=0, atol=0)
    assert cut.steps[1] == 0 and cut.steps[2] == full.steps[2] > 0


@pytest.mark.parametrize("graphs", [False, True])
def test_each_row_counts_its_own_evaluations(graphs: bool) -> None:
    """A row's evaluations follow its own steps: a tighter tolerance costs more, rows asking for t = 0
    alone cost nothing, and the count does not depend on the rows beside it."""
    z0, t = problem(b=5)
    loose = solve_per_series(linear, z0, t, SolverConfig(rtol=1e-2, atol=1e-3), graphs=graphs)
    tight = solve_per_series(linear, z0, t, SolverConfig(rtol=1e-7, atol=1e-9), graphs=graphs)
    assert loose.evals[0] == 0 and (tight.evals[1:] > loose.evals[1:]).all()
    fsal_per_try = len(TABLEAUS["dopri5"].c) - 1
    sides = 1 + (t < 0).any(dim=1).long()  # a row asking for earlier times also integrates backwards
    assert ((loose.evals[1:] - 2 * sides[1:]) % fsal_per_try == 0).all()  # f0 + initial step per side, 6 a try
    alone = solve_per_series(linear, z0[2:3], t[2:3], SolverConfig(rtol=1e-2, atol=1e-3), graphs=graphs)
    assert alone.evals[0] == loose.evals[2]
