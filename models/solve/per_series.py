"""Inference: `solve_per_series`. Each series has its own query times and its own adaptive step
sequence (explicit Runge–Kutta with per-row error control and dense output), all rows advanced
together as one batched tensor program. A row's result depends only on that row, so a forecast does
not change with whatever else is in the batch, and no work is done per query time.

Time conventions: z0 sits at relative time 0; query times may be negative (before the anchor).
Each row integrates s ∈ [0, 1] with t = T·s, where T is the row's furthest query time on its side
(forward rows: max(t, 0); backward rows: min(t, 0)), i.e. dz/ds = T f(T s, z).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import torch

from latentcast.models.config import SolverConfig
from latentcast.models.interrupt import poll
from latentcast.models.solve.graphs import Graph, GraphCache, bucket, capture
from latentcast.models.solve.status import SolverError, Status
from latentcast.models.solve.step import Problem, State, VectorField, dedupe_sorted, initial_step, make_step
from latentcast.models.solve.tableaus import TABLEAUS

#   window      query times interpolated per row and step in eager mode (more take another pass + sync)
#   full_window  below this many rows × query times, eager mode interpolates all of a row's queries each
#               step (one pass, no sync; small solves are bound by per-op overhead, not arithmetic)
#   sync_every  steps between host checks of "all rows done" (a step after a row is done changes nothing)
#   graphs      on CUDA, replay each step as a captured CUDA graph (shapes padded to buckets, cached)
#   graph_max_rows / graph_cache  largest padded row count captured; graphs kept (LRU)
# Why these values: bench/results/optimizations.md ("Solver execution knobs").
EXEC_DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {"window": 8, "full_window": 4096, "sync_every": 1, "graphs": 0, "graph_max_rows": 0, "graph_cache": 0},
    "cuda": {"window": 8, "full_window": 0, "sync_every": 1, "graphs": 1, "graph_max_rows": 1 << 18, "graph_cache": 48},
}


@dataclasses.dataclass
class PerSeriesSolution:
    """z: (B, Q, L) latent states at the query times ((B, Q, K) readout values if a readout was given).
    status: (B,) `Status` codes.
    nfe: batched vector-field evaluations. steps: (B,) accepted steps (forward + backward rows).
    evals: (B,) vector-field evaluations each row needed (forward + backward rows): its own cost."""

    z: torch.Tensor
    status: torch.Tensor
    nfe: int
    steps: torch.Tensor
    evals: torch.Tensor

    def raise_on_failure(self, max_num_steps: int) -> None:
        bad = self.status != Status.OK
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise SolverError(Status(int(self.status[rows[0]])), max_num_steps, rows=rows)


def solve_per_series(
    func: VectorField,
    z0: torch.Tensor,
    t_query: torch.Tensor,
    cfg: SolverConfig,
    window: int | None = None,
    sync_every: int | None = None,
    graphs: bool | None = None,
    readout: torch.nn.Linear | None = None,
    cache: GraphCache | None = None,
    deadline: torch.Tensor | None = None,
    on_rows: Callable[[torch.Tensor], None] | None = None,
) -> PerSeriesSolution:
    """Solve each row from z0 (at t = 0) to its own query times, with its own steps.

    func(t, z): t (R,) per-row times, z (R, L) → (R, L). z0: (B, L). t_query: (B, Q), any order and
    sign. Call under torch.no_grad() / inference_mode(). `deadline`: (B,) float64 `time.monotonic()`
    times on the CPU; between steps, rows past theirs stop with `Status.DEADLINE` (the others go on,
    unchanged). `on_rows(src)`, before the first evaluation: the solver's rows are z0's rows `src` (R,)
    (a series with queries before t = 0 gets a second, backward row), for a `func` that reads per-row
    inputs. With `readout` (a linear map L → K, e.g. a
    linear decoder) the solution holds readout(z) at the query times, (B, Q, K): the dense output is
    interpolated after the map, so its buffers hold K values per query instead of L.

    Execution knobs (results do not depend on them; defaults per device type in `EXEC_DEFAULTS`):
    `window` bounds how many query times are interpolated per row and step in eager mode (work per
    step is R × window × L; a step covering more queries takes another pass, after a host sync).
    `sync_every`: steps between host checks of "all rows done". `graphs`: on CUDA, replay each step as
    a CUDA graph captured for the padded shape (rows and queries padded to powers of two; padded rows
    are done from the start), which removes the per-kernel launch cost that dominates small batches;
    by default only when `func` is an `nn.Module` and a `cache` is given. The graphs live in `cache`
    (its owner keeps it with the model); graphs=True without one captures into a throwaway cache. A
    captured graph reads `func`'s parameters in place, so it stays valid while they are updated in
    place, not if they are reallocated.
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
    if back.numel():  # rows [0, B) forward, then one backward row per series in `back`
        src = torch.cat([torch.arange(b, device=dev), back])
        r = src.numel()
        span = torch.cat([t_hi, t_lo[back]])  # (R,) signed end time of each row
        is_fwd = torch.arange(r, device=dev) < b
        tq_r = tq[src]  # (R, Q)
        mine = torch.where(is_fwd[:, None], tq_r >= 0, tq_r < 0)
    else:  # the common case: every query ahead of the anchor, one forward row per series
        src, r, span, tq_r, mine = torch.arange(b, device=dev), b, t_hi, tq, None
    if on_rows is not None:
        on_rows(src)
    safe_span = torch.where(span == 0, 1.0, span)
    s_q = torch.where(span[:, None] == 0, 0.0, tq_r / safe_span[:, None])
    if mine is not None:
        s_q = torch.where(mine, s_q, torch.inf)
    s_u, order, rank = dedupe_sorted(s_q)
    z = z0 if mine is None else z0[src]
    lat = z.shape[1]
    k = lat if readout is None else readout.out_features  # values per query in the output
    n_buf = len(tab.c) + (0 if tab.fsal else 1)
    # graphs by default only for a module (stable identity and parameters) whose owner keeps a cache;
    # graphs=True off CUDA runs the same padded, cached-buffer path eagerly (for tests)
    auto = bool(knobs["graphs"]) and isinstance(func, torch.nn.Module) and cache is not None
    use_graph = auto if graphs is None else graphs
    r_pad, q_pad = (bucket(r, 8), bucket(q, 8)) if use_graph else (r, q)
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

        h = initial_step(field_s, z, f0 * span[:, None], cfg, tab.order)
    else:
        h = (cfg.step_size / span.abs().clamp(min=1e-30)).clamp(max=1.0)
        too_many = torch.ceil(1.0 / h) > cfg.max_num_steps
        status = torch.where(too_many & ~done, int(Status.MAX_STEPS), status)
        done = done | too_many
    state = State(
        z=z,
        s=torch.zeros(r, dtype=dtype, device=dev),
        h=h,
        done=done,
        status=status,
        steps=torch.zeros(r, dtype=torch.long, device=dev),
        tries=torch.zeros(r, dtype=torch.long, device=dev),
        ptr=(s_u[:, 0] == 0).long(),  # (R,) next unanswered query (unique, sorted)
    )
    with contextlib.ExitStack() as stack:
        graph: Graph | None = None
        if use_graph:
            cache = cache if cache is not None else GraphCache(size=1)
            stack.enter_context(cache.lock)  # the graph's buffers are shared: one solve at a time
            stack.enter_context(torch.inference_mode())
            key = (id(func), id(readout), cfg, r_pad, width, w, n_buf, lat, dtype, dev)
            graph = cache.get(
                key, func, readout, lambda: capture(func, cfg, r_pad, width, w, n_buf, lat, readout, dtype, dev)
            )
        if graph is None:
            problem = Problem(
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
        expire = _Deadlines(deadline[src.cpu()] if deadline is not None else None)
        if graph is None:
            step = make_step(f, cfg, problem, readout)
            for it in range(cfg.max_num_steps):
                if it % check == 0:
                    poll()
                    expire(state)
                    if bool(state.done.all()):
                        break
                state = step(state)
        else:
            pad = {"z": 0.0, "s": 0.0, "h": 1.0, "done": True, "status": 0, "steps": 0, "tries": 0, "ptr": 0}
            for name, value in pad.items():
                buf = getattr(graph.state, name)
                buf.fill_(value)
                buf[:r] = getattr(state, name)
            evals = n_buf - 1  # vector-field evaluations per step (stage 0 is carried over)
            for it in range(cfg.max_num_steps):
                if it % check == 0:
                    poll()
                    expire(graph.state)
                    if bool(graph.state.done.all()):
                        break
                graph.replay()
                nfe += evals
        # query j of row i sits in slot rank[i, k] where order[i, k] = j: one row gather puts them in order
        slot = torch.empty_like(rank).scatter_(1, order, rank)  # (R, Q)
        base = torch.arange(r, device=dev)[:, None] * width
        z_rows = out.index_select(0, (base + slot).flatten()).view(r, q, k)
    if graph is not None:  # copies made outside inference mode: ordinary tensors for the caller
        state = State(*(x[:r].clone() for x in graph.state.tensors()))
        z_rows = z_rows.clone()
    status = torch.where(~state.done, int(Status.MAX_STEPS), state.status)
    z_out = z_rows[:b]
    status_out = status[:b].clone()
    steps_out = state.steps[:b].clone()
    per_try = n_buf - 1  # evaluations per attempted step (stage 0 is the previous step's last)
    start_evals = torch.where(span == 0, 0, 2 if tab.b_err is not None else 1)  # f0, and the initial step's
    row_evals = state.tries * per_try + start_evals  # (R,)
    evals_out = row_evals[:b].clone()
    if back.numel():
        neg = (tq[back] < 0)[..., None]
        z_out[back] = torch.where(neg, z_rows[b:], z_out[back])
        status_out[back] = torch.maximum(status_out[back], status[b:])
        steps_out[back] += state.steps[b:]
        evals_out[back] += row_evals[b:]
    return PerSeriesSolution(z=z_out, status=status_out, nfe=nfe, steps=steps_out, evals=evals_out)


class _Deadlines:
    """Stops rows whose deadline has passed: marks them done with `Status.DEADLINE`. Costs one clock read
    per check until the earliest pending deadline passes."""

    def __init__(self, rows: torch.Tensor | None):
        self.rows = rows.to(torch.float64).numpy() if rows is not None else None
        self.next = float(self.rows.min()) if self.rows is not None and self.rows.size else float("inf")

    def __call__(self, state: State) -> None:
        if self.rows is None or time.monotonic() < self.next:
            return
        now = time.monotonic()
        expired = torch.as_tensor(self.rows <= now, device=state.done.device)
        n = len(self.rows)
        late = expired & ~state.done[:n]
        state.status[:n] = torch.where(late, int(Status.DEADLINE), state.status[:n])
        state.done[:n] |= expired
        pending = self.rows[self.rows > now]
        self.next = float(pending.min()) if pending.size else float("inf")
