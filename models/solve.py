"""ODE solves: one boundary where solver failures become a typed `SolverError`.

Two entry points:
- `odeint_grid`: torchdiffeq (optionally its adjoint) on one shared time grid for a whole batch. The
  training path: every series of a batch is solved on the union of the batch's times.
- `solve_per_series`: inference. Each series has its own query times and its own adaptive step
  sequence (explicit Runge–Kutta with per-row error control and dense output), all rows advanced
  together as one batched tensor program. A row's result depends only on that row, so a forecast
  does not change with whatever else is in the batch, and no work is done per query time.

Time conventions: z0 sits at relative time 0; query times may be negative (before the anchor).
Each row integrates s ∈ [0, 1] with t = T·s, where T is the row's furthest query time on its side
(forward rows: max(t, 0); backward rows: min(t, 0)), i.e. dz/ds = T f(T s, z).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import threading
import warnings
import weakref
from collections.abc import Callable

import torch
from torchdiffeq import odeint, odeint_adjoint

from models.config import SolverConfig

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Status(enum.IntEnum):
    OK = 0
    MAX_STEPS = 1
    NONFINITE = 2


_ADVICE = {
    Status.MAX_STEPS: "the solve needed more than solver.max_num_steps={steps} steps; raise "
    "solver.max_num_steps, loosen solver.rtol/atol, or shorten the horizon",
    Status.NONFINITE: "the latent state became NaN/inf or the step size underflowed (the dynamics blew "
    "up); shorten the horizon or check the inputs are in the model's range",
}


class SolverError(RuntimeError):
    """An ODE solve failed. `status` says why; `rows` lists the failing batch rows where known."""

    def __init__(self, status: Status, max_num_steps: int, rows: list[int] | None = None, detail: str = ""):
        self.status = status
        self.rows = rows or []
        self.reason = _ADVICE[status].format(steps=max_num_steps)
        super().__init__(self.reason + (f" ({detail})" if detail else ""))


# ---------------------------------------------------------------------------------------------------
# Training path: torchdiffeq on a shared grid.


def _odeint_options(cfg: SolverConfig) -> dict[str, object]:
    if cfg.adaptive:
        return {
            "method": cfg.method,
            "rtol": cfg.rtol,
            "atol": cfg.atol,
            "options": {"max_num_steps": cfg.max_num_steps},
        }
    return {"method": cfg.method, "options": {"step_size": cfg.step_size}}


def odeint_grid(func: torch.nn.Module, z0: torch.Tensor, t: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:
    """Solve from z0 at time 0 to every time in `t`.

    func(t, z) → dz/dt. z0: (B, L). t: (T,) strictly increasing, any sign. Returns (B, T, L).
    Negative times are reached by integrating backwards from 0.
    """
    if t.ndim != 1 or (t.numel() > 1 and not bool((t[1:] > t[:-1]).all())):
        raise ValueError("odeint_grid: t must be 1-D and strictly increasing")
    if not cfg.adaptive:
        span = float(t.abs().max()) if t.numel() else 0.0
        if span / cfg.step_size > cfg.max_num_steps:
            raise SolverError(Status.MAX_STEPS, cfg.max_num_steps, detail=f"fixed steps over span {span:.3g}")
    kwargs = _odeint_options(cfg)
    parts = []
    zero = torch.zeros(1, dtype=t.dtype, device=t.device)
    for side in (t[t < 0].flip(0), t[t >= 0]):
        if side.numel() == 0:
            continue
        has_zero = bool(side[0] == 0)
        grid = side if has_zero else torch.cat([zero, side])
        if grid.numel() == 1:  # only t = 0 asked
            parts.append((side, z0.unsqueeze(1)))
            continue
        try:
            if cfg.adjoint:
                zs = odeint_adjoint(
                    func,
                    z0,
                    grid,
                    adjoint_params=tuple(func.parameters()),
                    adjoint_options=kwargs["options"],
                    **kwargs,
                )
            else:
                zs = odeint(func, z0, grid, **kwargs)
        except AssertionError as exc:  # torchdiffeq signals limits and blow-ups with asserts
            msg = str(exc)
            status = Status.MAX_STEPS if "max_num_steps" in msg else Status.NONFINITE
            raise SolverError(status, cfg.max_num_steps, detail=msg[:200]) from exc
        except RuntimeError as exc:  # fixed-grid solvers: "Reached maximum number of iterations"
            if "maximum number" not in str(exc):
                raise
            raise SolverError(Status.MAX_STEPS, cfg.max_num_steps, detail=str(exc)[:200]) from exc
        zs = zs.transpose(0, 1)  # (B, len(grid), L)
        if not has_zero:
            zs = zs[:, 1:]
        parts.append((side, zs))
    if len(parts) == 2:  # negative side was solved in decreasing time: flip back to increasing
        out = torch.cat([parts[0][1].flip(1), parts[1][1]], dim=1)
    elif parts and bool(parts[0][0][0] < 0):
        out = parts[0][1].flip(1)
    else:
        out = parts[0][1] if parts else z0.new_zeros(z0.shape[0], 0, z0.shape[1])
    if not bool(torch.isfinite(out).all()):
        bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten().tolist()
        raise SolverError(Status.NONFINITE, cfg.max_num_steps, rows=bad)
    return out


# ---------------------------------------------------------------------------------------------------
# Inference path: per-series explicit Runge–Kutta with dense output.


@dataclasses.dataclass(frozen=True)
class _Tableau:
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

TABLEAUS: dict[str, _Tableau] = {
    "dopri5": _Tableau(
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
    "bosh3": _Tableau(
        c=(0.0, 1 / 2, 3 / 4, 1.0),
        a=((1 / 2,), (0.0, 3 / 4), _BOSH3_B[:3]),
        b=_BOSH3_B,
        b_err=tuple(x - y for x, y in zip(_BOSH3_B, _BOSH3_BHAT, strict=True)),
        order=3,
        fsal=True,
    ),
    "rk4": _Tableau(
        c=(0.0, 1 / 2, 1 / 2, 1.0),
        a=((1 / 2,), (0.0, 1 / 2), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        b_err=None,
        order=4,
        fsal=False,
    ),
    "midpoint": _Tableau(c=(0.0, 1 / 2), a=((1 / 2,),), b=(0.0, 1.0), b_err=None, order=2, fsal=False),
    "euler": _Tableau(c=(0.0,), a=(), b=(1.0,), b_err=None, order=1, fsal=False),
}

_SAFETY, _IFACTOR, _DFACTOR, _MIN_STEP = 0.9, 10.0, 0.2, 1e-10

# Execution knobs per device type (see solve_per_series; results never depend on them):
#   window      query times interpolated per row and step in eager mode (more take another pass + sync)
#   full_window  below this many rows × query times, eager mode interpolates all of a row's queries each
#               step (one pass, no sync; small solves are bound by per-op overhead, not arithmetic)
#   sync_every  steps between host checks of "all rows done" (a step after a row is done changes nothing)
#   graphs      on CUDA, replay each step as a captured CUDA graph (shapes padded to buckets, cached)
#   graph_max_rows / graph_cache  largest padded row count captured; graphs kept (LRU)
# Measured on an H100 (bench/results/optimizations.md): the solve is launch-bound below ~10^5 rows, and
# adaptive solves here take ~10 steps, so waiting 8 steps between syncs wastes more than syncs cost.
EXEC_DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {"window": 8, "full_window": 4096, "sync_every": 1, "graphs": 0, "graph_max_rows": 0, "graph_cache": 0},
    "cuda": {"window": 8, "full_window": 0, "sync_every": 1, "graphs": 1, "graph_max_rows": 1 << 18, "graph_cache": 48},
}


@dataclasses.dataclass
class PerSeriesSolution:
    """z: (B, Q, L) latent states at the query times ((B, Q, K) readout values if a readout was given).
    status: (B,) `Status` codes.
    nfe: batched vector-field evaluations. steps: (B,) accepted steps (forward + backward rows)."""

    z: torch.Tensor
    status: torch.Tensor
    nfe: int
    steps: torch.Tensor

    def raise_on_failure(self, max_num_steps: int) -> None:
        bad = self.status != Status.OK
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise SolverError(Status(int(self.status[rows[0]])), max_num_steps, rows=rows)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt()


def _dedupe_sorted(s_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: sort query positions and move unique values to the front (duplicates → +inf).

    Returns s_unique (R, Q), order (R, Q) sorting permutation, rank (R, Q): for each sorted position,
    the index of its value in s_unique.
    """
    s_sorted, order = s_q.sort(dim=1)
    dup = torch.zeros_like(s_sorted, dtype=torch.bool)
    dup[:, 1:] = s_sorted[:, 1:] == s_sorted[:, :-1]
    q = s_q.shape[1]
    key = dup.long() * q + torch.arange(q, device=s_q.device)
    perm = key.argsort(dim=1)
    s_unique = torch.where(dup.gather(1, perm), torch.inf, s_sorted.gather(1, perm))
    rank = (~dup).long().cumsum(1) - 1
    return s_unique, order, rank


@dataclasses.dataclass
class _State:
    """What a step reads and writes, per row (R rows): latent state z (R, L), position s ∈ [0, 1],
    proposed step h (s units), done, status, accepted steps, ptr = next unanswered (sorted, unique)
    query. Besides these, a step writes in place into `stages` (dz/dt per stage) and `out` (answers)."""

    z: torch.Tensor
    s: torch.Tensor
    h: torch.Tensor
    done: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    ptr: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.z, self.s, self.h, self.done, self.status, self.steps, self.ptr]


@dataclasses.dataclass
class _Problem:
    """Per-call inputs of the step loop, R rows × W query slots: span (R,) signed end time of each row;
    s_pad (R, Q + W) sorted unique query positions in s units, +inf padded; stages (n, R, L) and
    out (R · (Q + W), K) buffers written in place (K = L, or the readout's width)."""

    span: torch.Tensor
    s_pad: torch.Tensor
    stages: torch.Tensor
    out: torch.Tensor
    window: int

    def tensors(self) -> list[torch.Tensor]:
        return [self.span, self.s_pad, self.stages, self.out]


def _make_step(
    func: VectorField, cfg: SolverConfig, p: _Problem, readout: torch.nn.Linear | None = None
) -> Callable[[_State], _State]:
    """One step of every row (adaptive: accepted or rejected per row), answering the queries it covers
    by dense output (through `readout` if given). Pure tensor code apart from the eager multi-pass
    window (never taken in a graph, where the window covers all queries)."""
    tab = TABLEAUS[cfg.method]
    r, lat = p.stages.shape[1], p.stages.shape[2]
    dev, dtype = p.stages.device, p.stages.dtype
    mats = _matrices(cfg.method, dev, dtype)
    n_st = len(tab.c)
    flat = p.stages.view(p.stages.shape[0], -1)
    stages, span, s_pad, out = p.stages, p.span, p.s_pad, p.out
    q = s_pad.shape[1] - p.window
    w = p.window
    width = s_pad.shape[1]
    base = torch.arange(r, device=dev)[:, None] * width  # (R, 1) first slot of each row in `out`
    win = torch.arange(w, device=dev)

    def step(st: _State) -> _State:
        z, s, h, done, ptr = st.z, st.s, st.h, st.done, st.ptr
        last = h >= (1 - s) * (1 - 1e-6)  # within rounding of the end: finish exactly at s = 1
        h_eff = torch.where(last, 1 - s, h)
        ht = h_eff * span  # (R,) the step in model time, signed
        htc = ht[:, None]
        t0 = s * span
        for i in range(1, n_st):  # stage i from stages 0..i-1: one matrix-vector product
            comb = torch.mv(flat[:i].t(), mats.a[i - 1]).view(r, lat)
            stages[i] = func(t0 + tab.c[i] * ht, torch.addcmul(z, htc, comb))
        z_new = torch.addcmul(z, htc, torch.mv(flat[:n_st].t(), mats.b).view(r, lat))
        finite = torch.isfinite(z_new).all(1)
        if mats.e is not None:
            err = htc * torch.mv(flat[:n_st].t(), mats.e).view(r, lat)
            scale = cfg.atol + cfg.rtol * torch.maximum(z.abs(), z_new.abs())
            ratio = _rms(err / scale)
            ratio = torch.where(finite & torch.isfinite(ratio), ratio, torch.inf)
            accept = (ratio <= 1) & ~done
            factor = (_SAFETY * ratio.clamp(min=1e-10).pow(-1.0 / tab.order)).clamp(_DFACTOR, _IFACTOR)
            factor = torch.where(accept, factor, factor.clamp(max=1.0))
            h_next = h_eff * factor
            underflow = ~accept & ~done & (h_next < _MIN_STEP)
        else:
            accept = finite & ~done
            h_next = h
            underflow = ~finite & ~done
        s_end = torch.where(last, torch.ones_like(s), s + h_eff)
        if not tab.fsal:
            stages[n_st] = func(s_end * span, z_new)
        coef = torch.mm(mats.dense.t(), flat).view(4, r, lat)  # y(θ) = z + ht Σ_j coef_j θ^(j+1)
        # dense output for the next `w` unanswered queries of each row (more passes if a step covers more)
        basis = torch.cat([z[:, None], coef.transpose(0, 1) * htc[:, None]], dim=1)  # (R, 5, L)
        if readout is not None:  # a linear map commutes with the interpolant: interpolate K < L values
            basis = torch.matmul(basis, readout.weight.t())  # (R, 5, K)
            basis[:, 0] += readout.bias
        while True:
            idx = ptr[:, None] + win  # (R, W)
            s_win = s_pad.gather(1, idx)
            ans = accept[:, None] & (s_win <= s_end[:, None])
            theta = ((s_win - s[:, None]) / h_eff[:, None]).clamp(0.0, 1.0)
            powers = torch.stack([torch.ones_like(theta), theta, theta**2, theta**3, theta**4], dim=-1)
            out.index_copy_(0, (base + idx).flatten(), torch.bmm(powers, basis).flatten(0, 1))
            ptr = ptr + ans.sum(1)
            if w >= q or not bool(ans[:, -1].any()):
                break
        stages[0] = torch.where(accept[:, None], stages[-1], stages[0])  # derivative at the new point
        return _State(
            z=torch.where(accept[:, None], z_new, z),
            s=torch.where(accept, s_end, s),
            h=torch.where(done, h, h_next),
            done=done | (accept & last) | underflow,
            status=torch.where(underflow, int(Status.NONFINITE), st.status),
            steps=st.steps + accept.long(),
            ptr=ptr,
        )

    return step


def _bucket(n: int, least: int) -> int:
    """Next power of two ≥ max(n, least): graphs are captured per padded shape and reused."""
    return max(least, 1 << max(0, n - 1).bit_length())


@dataclasses.dataclass
class _Graph:
    """A captured step over static buffers: copy a call's problem and state in, replay, read out.
    Off CUDA (tests) `graph` is None and replay runs the same step eagerly on the same buffers.
    `step` is kept alive with the graph: its closure owns tensors the graph reads (row offsets, window
    indices), which the caching allocator would otherwise hand to other tensors. `owners`: weak
    references to the vector field and readout whose parameters the graph reads in place."""

    graph: torch.cuda.CUDAGraph | None
    step: Callable[[_State], _State]
    problem: _Problem
    state: _State
    owners: tuple[Callable[[], object], ...]

    def owned_by(self, func: VectorField, readout: torch.nn.Linear | None) -> bool:
        return all(ref() is obj for ref, obj in zip(self.owners, (func, readout), strict=True))

    def replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            _assign(self.state, self.step(self.state))


def _assign(dst: _State, src: _State) -> None:
    for a, b in zip(dst.tensors(), src.tensors(), strict=True):
        a.copy_(b)


_GRAPHS: collections.OrderedDict[tuple[object, ...], _Graph | None] = collections.OrderedDict()
_GRAPH_LOCK = threading.Lock()
_CAPTURES = [0]


def graph_captures() -> int:
    """CUDA graphs captured so far in this process (a capture during traffic is a latency spike)."""
    return _CAPTURES[0]


def _refs(func: VectorField, readout: torch.nn.Linear | None) -> tuple[Callable[[], object], ...]:
    return (weakref.ref(func), weakref.ref(readout) if readout is not None else lambda: None)


def _capture(
    func: VectorField,
    cfg: SolverConfig,
    r: int,
    width: int,
    w: int,
    n_buf: int,
    lat: int,
    readout: torch.nn.Linear | None,
    dtype: torch.dtype,
    dev: torch.device,
) -> _Graph:
    """Capture one step for these padded shapes, on zeroed buffers (every row done: a no-op step)."""
    problem = _Problem(
        span=torch.zeros(r, dtype=dtype, device=dev),
        s_pad=torch.zeros(r, width, dtype=dtype, device=dev),
        stages=torch.zeros(n_buf, r, lat, dtype=dtype, device=dev),
        out=torch.zeros(r * width, lat if readout is None else readout.out_features, dtype=dtype, device=dev),
        window=w,
    )
    state = _State(
        z=torch.zeros(r, lat, dtype=dtype, device=dev),
        s=torch.zeros(r, dtype=dtype, device=dev),
        h=torch.ones(r, dtype=dtype, device=dev),
        done=torch.ones(r, dtype=torch.bool, device=dev),
        status=torch.zeros(r, dtype=torch.long, device=dev),
        steps=torch.zeros(r, dtype=torch.long, device=dev),
        ptr=torch.zeros(r, dtype=torch.long, device=dev),
    )
    step = _make_step(func, cfg, problem, readout)
    if dev.type != "cuda":
        return _Graph(graph=None, step=step, problem=problem, state=state, owners=_refs(func, readout))
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):  # warm-up outside the graph (cuBLAS handles, workspaces)
        for _ in range(2):
            step(state)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _assign(state, step(state))
    return _Graph(graph=graph, step=step, problem=problem, state=state, owners=_refs(func, readout))


def _graph_for(
    key: tuple[object, ...],
    func: VectorField,
    readout: torch.nn.Linear | None,
    build: Callable[[], _Graph],
    cache_size: int,
) -> _Graph | None:
    """The cached graph for `key`, captured on first use; None if capture failed here before."""
    if key in _GRAPHS:
        hit = _GRAPHS[key]
        if hit is None or hit.owned_by(func, readout):  # not new modules that reuse freed ones' ids
            _GRAPHS.move_to_end(key)
            return hit
        del _GRAPHS[key]
    _CAPTURES[0] += 1
    try:
        entry: _Graph | None = build()
    except RuntimeError as exc:  # an op that cannot be captured: solve eagerly from now on
        warnings.warn(f"CUDA graph capture failed, solving eagerly: {exc}", RuntimeWarning, stacklevel=3)
        entry = None
    _GRAPHS[key] = entry
    while len(_GRAPHS) > cache_size:
        _GRAPHS.popitem(last=False)
    return entry


def solve_per_series(
    func: VectorField,
    z0: torch.Tensor,
    t_query: torch.Tensor,
    cfg: SolverConfig,
    window: int | None = None,
    sync_every: int | None = None,
    graphs: bool | None = None,
    readout: torch.nn.Linear | None = None,
) -> PerSeriesSolution:
    """Solve each row from z0 (at t = 0) to its own query times, with its own steps.

    func(t, z): t (R,) per-row times, z (R, L) → (R, L). z0: (B, L). t_query: (B, Q), any order and
    sign. Call under torch.no_grad() / inference_mode(). With `readout` (a linear map L → K, e.g. a
    linear decoder) the solution holds readout(z) at the query times, (B, Q, K): the dense output is
    interpolated after the map, so its buffers hold K values per query instead of L.

    Execution knobs (results do not depend on them; defaults per device type in `EXEC_DEFAULTS`):
    `window` bounds how many query times are interpolated per row and step in eager mode (work per
    step is R × window × L; a step covering more queries takes another pass, after a host sync).
    `sync_every`: steps between host checks of "all rows done". `graphs`: on CUDA, replay each step as
    a CUDA graph captured for the padded shape (rows and queries padded to powers of two; padded rows
    are done from the start), which removes the per-kernel launch cost that dominates small batches;
    by default only when `func` is an `nn.Module`. A captured graph reads `func`'s parameters in
    place, so it stays valid while they are updated in place, not if they are reallocated.
    """
    if t_query.ndim != 2 or z0.ndim != 2 or t_query.shape[0] != z0.shape[0]:
        raise ValueError(
            f"solve_per_series: need z0 (B, L) and t_query (B, Q), got {tuple(z0.shape)}, {tuple(t_query.shape)}"
        )
    if not bool(torch.isfinite(t_query).all()):
        raise ValueError("solve_per_series: query times must be finite")
    tab = TABLEAUS[cfg.method]
    b, q = t_query.shape
    dev, dtype = z0.device, z0.dtype
    knobs = EXEC_DEFAULTS["cuda" if dev.type == "cuda" else "cpu"]
    tq = t_query.to(dtype)
    t_hi = tq.clamp(min=0).amax(1)  # (B,)
    t_lo = tq.clamp(max=0).amin(1)  # (B,)
    back = (t_lo < 0).nonzero().flatten()  # rows that also integrate backwards
    src = torch.cat([torch.arange(b, device=dev), back])
    r = src.numel()
    span = torch.cat([t_hi, t_lo[back]])  # (R,) signed end time of each row
    is_fwd = torch.arange(r, device=dev) < b
    tq_r = tq[src]  # (R, Q)
    mine = torch.where(is_fwd[:, None], tq_r >= 0, tq_r < 0)
    safe_span = torch.where(span == 0, torch.ones_like(span), span)
    s_q = torch.where(mine, torch.where(span[:, None] == 0, 0.0, tq_r / safe_span[:, None]), torch.inf)
    s_u, order, rank = _dedupe_sorted(s_q)
    z = z0[src]
    lat = z.shape[1]
    k = lat if readout is None else readout.out_features  # values per query in the output
    n_buf = len(tab.c) + (0 if tab.fsal else 1)
    # graphs by default only for a module (stable identity and parameters), not e.g. a fresh lambda;
    # graphs=True off CUDA runs the same padded, cached-buffer path eagerly (for tests)
    auto = bool(knobs["graphs"]) and isinstance(func, torch.nn.Module)
    use_graph = auto if graphs is None else graphs
    r_pad, q_pad = (_bucket(r, 8), _bucket(q, 8)) if use_graph else (r, q)
    use_graph = use_graph and (r_pad <= knobs["graph_max_rows"] or graphs is True)
    if not use_graph:
        r_pad, q_pad = r, q
    eager_window = q if r * q <= knobs["full_window"] else knobs["window"]
    w = q_pad if use_graph else min(window or eager_window, q)
    width = q_pad + w
    check = max(1, sync_every or knobs["sync_every"])

    nfe = 0

    def f(t: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return func(t, zz)

    f0 = f(torch.zeros(r, dtype=dtype, device=dev), z)
    done = span == 0
    status = torch.zeros(r, dtype=torch.long, device=dev)
    if tab.b_err is not None:

        def field_s(ss: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:  # d/ds = span · d/dt
            return f(span * ss, zz) * span[:, None]

        h = _initial_step(field_s, z, f0 * span[:, None], cfg, tab.order)
    else:
        h = (cfg.step_size / span.abs().clamp(min=1e-30)).clamp(max=1.0)
        too_many = torch.ceil(1.0 / h) > cfg.max_num_steps
        status = torch.where(too_many & ~done, int(Status.MAX_STEPS), status)
        done = done | too_many
    state = _State(
        z=z,
        s=torch.zeros(r, dtype=dtype, device=dev),
        h=h,
        done=done,
        status=status,
        steps=torch.zeros(r, dtype=torch.long, device=dev),
        ptr=(s_u[:, 0] == 0).long(),  # (R,) next unanswered query (unique, sorted)
    )
    with contextlib.ExitStack() as stack:
        graph: _Graph | None = None
        if use_graph:
            stack.enter_context(_GRAPH_LOCK)  # the graph's buffers are shared: one solve at a time
            stack.enter_context(torch.inference_mode())
            key = (id(func), id(readout), cfg, r_pad, width, w, n_buf, lat, dtype, dev)
            graph = _graph_for(
                key,
                func,
                readout,
                lambda: _capture(func, cfg, r_pad, width, w, n_buf, lat, readout, dtype, dev),
                knobs["graph_cache"],
            )
        if graph is None:
            problem = _Problem(
                span=span,
                s_pad=torch.full((r, width), torch.inf, dtype=dtype, device=dev),
                stages=z.new_zeros(n_buf, r, lat),
                out=z.new_empty(r * width, k),
                window=w,
            )
            r_pad = r
        else:
            problem = graph.problem  # padded rows: span 0, no queries, done from the start
            problem.span.zero_()[:r] = span
            problem.s_pad.fill_(torch.inf)
            problem.stages.zero_()
        problem.s_pad[:r, :q] = s_u
        problem.stages[0, :r] = f0
        out = problem.out
        out.view(r_pad, width, k)[:r, 0] = z if readout is None else readout(z)  # a query at s = 0 is z0
        if graph is None:
            step = _make_step(f, cfg, problem, readout)
            for it in range(cfg.max_num_steps):
                if it % check == 0 and bool(state.done.all()):
                    break
                state = step(state)
        else:
            pad = {"z": 0.0, "s": 0.0, "h": 1.0, "done": True, "status": 0, "steps": 0, "ptr": 0}
            for name, value in pad.items():
                buf = getattr(graph.state, name)
                buf.fill_(value)
                buf[:r] = getattr(state, name)
            evals = n_buf - 1  # vector-field evaluations per step (stage 0 is carried over)
            for it in range(cfg.max_num_steps):
                if it % check == 0 and bool(graph.state.done.all()):
                    break
                graph.replay()
                nfe += evals
        # query j of row i sits in slot rank[i, k] where order[i, k] = j: one row gather puts them in order
        slot = torch.empty_like(rank).scatter_(1, order, rank)  # (R, Q)
        base = torch.arange(r, device=dev)[:, None] * width
        z_rows = out.index_select(0, (base + slot).flatten()).view(r, q, k)
    if graph is not None:  # copies made outside inference mode: ordinary tensors for the caller
        state = _State(*(x[:r].clone() for x in graph.state.tensors()))
        z_rows = z_rows.clone()
    status = torch.where(~state.done, int(Status.MAX_STEPS), state.status)
    z_out = z_rows[:b]
    status_out = status[:b].clone()
    steps_out = state.steps[:b].clone()
    if back.numel():
        neg = (tq[back] < 0)[..., None]
        z_out[back] = torch.where(neg, z_rows[b:], z_out[back])
        status_out[back] = torch.maximum(status_out[back], status[b:])
        steps_out[back] += state.steps[b:]
    return PerSeriesSolution(z=z_out, status=status_out, nfe=nfe, steps=steps_out)


def _initial_step(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    f0: torch.Tensor,
    cfg: SolverConfig,
    order: int,
) -> torch.Tensor:
    """Per-row initial step (Hairer, Nørsett & Wanner, Solving ODEs I, II.4), in s units, ≤ 1."""
    scale = cfg.atol + cfg.rtol * z0.abs()
    d0, d1 = _rms(z0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp(min=1e-30))
    h0 = h0.clamp(max=1.0)
    f1 = field(h0, z0 + h0[:, None] * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / dmax.clamp(min=1e-30)).pow(1.0 / order),
    )
    return torch.minimum(100 * h0, h1).clamp(min=_MIN_STEP * 10, max=1.0)


@dataclasses.dataclass(frozen=True)
class _Matrices:
    """A tableau as tensors: a[i] (i + 1,) weights of stage i + 1; b (n,); e (n,) error weights or None;
    dense (n_ext, 4): dense-output coefficients over the stage derivatives (plus f at the step's end for
    methods that do not evaluate it as their last stage)."""

    a: list[torch.Tensor]
    b: torch.Tensor
    e: torch.Tensor | None
    dense: torch.Tensor


@functools.lru_cache(maxsize=32)
def _matrices(method: str, device: torch.device, dtype: torch.dtype) -> _Matrices:
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
    return _Matrices(
        a=[vec(row, i + 1) for i, row in enumerate(tab.a)],
        b=vec(tab.b, n),
        e=vec(tab.b_err, n) if tab.b_err is not None else None,
        dense=dense,
    )
