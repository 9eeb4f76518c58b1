"""One adaptive (or fixed) Runge–Kutta step of every row at once, with per-row error control and dense
output at the query times it covers; and the per-row initial step.

Each row integrates s ∈ [0, 1] with t = T·s, where T is the row's signed span (dz/ds = T f(T s, z)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from latentcast.models.config import SolverConfig
from latentcast.models.solve.status import Status
from latentcast.models.solve.tableaus import TABLEAUS, matrices

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAFETY, IFACTOR, DFACTOR, MIN_STEP = 0.9, 10.0, 0.2, 1e-10


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt()


def dedupe_sorted(s_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
class State:
    """What a step reads and writes, per row (R rows): latent state z (R, L), position s ∈ [0, 1],
    proposed step h (s units), done, status, accepted steps, tries (steps attempted, accepted or not),
    ptr = next unanswered (sorted, unique) query. Besides these, a step writes in place into `stages`
    (dz/dt per stage) and `out` (answers)."""

    z: torch.Tensor
    s: torch.Tensor
    h: torch.Tensor
    done: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    tries: torch.Tensor
    ptr: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.z, self.s, self.h, self.done, self.status, self.steps, self.tries, self.ptr]


@dataclasses.dataclass
class Problem:
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


def make_step(
    func: VectorField, cfg: SolverConfig, p: Problem, readout: torch.nn.Linear | None = None
) -> Callable[[State], State]:
    """One step of every row (adaptive: accepted or rejected per row), answering the queries it covers
    by dense output (through `readout` if given). Pure tensor code apart from the eager multi-pass
    window (never taken in a graph, where the window covers all queries)."""
    tab = TABLEAUS[cfg.method]
    r, lat = p.stages.shape[1], p.stages.shape[2]
    dev, dtype = p.stages.device, p.stages.dtype
    mats = matrices(cfg.method, dev, dtype)
    n_st = len(tab.c)
    flat = p.stages.view(p.stages.shape[0], -1)
    stages, span, s_pad, out = p.stages, p.span, p.s_pad, p.out
    q = s_pad.shape[1] - p.window
    w = p.window
    width = s_pad.shape[1]
    base = torch.arange(r, device=dev)[:, None] * width  # (R, 1) first slot of each row in `out`
    win = torch.arange(w, device=dev)
    # (R·L, i) views of the first i stages, made once: the stages are written in place, step after step
    firsts = [flat[:i].t() for i in range(n_st + 1)]
    exponents = torch.arange(5, device=dev, dtype=dtype)
    inv_sqrt_lat = lat**-0.5

    def step(st: State) -> State:
        z, s, h, done, ptr = st.z, st.s, st.h, st.done, st.ptr
        left = 1 - s
        last = h >= left * (1 - 1e-6)  # within rounding of the end: finish exactly at s = 1
        h_eff = torch.where(last, left, h)
        ht = h_eff * span  # (R,) the step in model time, signed
        htc = ht[:, None]
        t0 = s * span
        for i in range(1, n_st):  # stage i from stages 0..i-1: one matrix-vector product
            comb = torch.mv(firsts[i], mats.a[i - 1]).view(r, lat)
            stages[i] = func(torch.add(t0, ht, alpha=tab.c[i]), torch.addcmul(z, htc, comb))
        z_new = torch.addcmul(z, htc, torch.mv(firsts[n_st], mats.b).view(r, lat))
        finite = torch.isfinite(z_new).all(1)
        if mats.e is not None:
            err = htc * torch.mv(firsts[n_st], mats.e).view(r, lat)
            scale = torch.maximum(z.abs(), z_new.abs()).mul_(cfg.rtol).add_(cfg.atol)
            ratio = torch.linalg.vector_norm(err.div_(scale), dim=-1).mul_(inv_sqrt_lat)  # rms(err / scale)
            ratio = torch.where(finite & torch.isfinite(ratio), ratio, torch.inf)
            accept = (ratio <= 1) & ~done
            factor = (SAFETY * ratio.clamp(min=1e-10).pow(-1.0 / tab.order)).clamp(DFACTOR, IFACTOR)
            factor = torch.where(accept, factor, factor.clamp(max=1.0))
            h_next = h_eff * factor
            underflow = ~accept & ~done & (h_next < MIN_STEP)
        else:
            accept = finite & ~done
            h_next = h
            underflow = ~finite & ~done
        s_end = torch.where(last, 1.0, s + h_eff)
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
            powers = theta[..., None] ** exponents  # (R, W, 5): 1, θ, θ², θ³, θ⁴
            out.index_copy_(0, (base + idx).flatten(), torch.bmm(powers, basis).flatten(0, 1))
            ptr = ptr + ans.sum(1)
            if w >= q or not bool(ans[:, -1].any()):
                break
        stages[0] = torch.where(accept[:, None], stages[-1], stages[0])  # derivative at the new point
        return State(
            z=torch.where(accept[:, None], z_new, z),
            s=torch.where(accept, s_end, s),
            h=torch.where(done, h, h_next),
            done=done | (accept & last) | underflow,
            status=torch.where(underflow, int(Status.NONFINITE), st.status),
            steps=st.steps + accept,  # bool added to long: 0 or 1
            tries=st.tries + ~done,
            ptr=ptr,
        )

    return step


def initial_step(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    f0: torch.Tensor,
    cfg: SolverConfig,
    order: int,
) -> torch.Tensor:
    """Per-row initial step (Hairer, Nørsett & Wanner, Solving ODEs I, II.4), in s units, ≤ 1."""
    scale = cfg.atol + cfg.rtol * z0.abs()
    d0, d1 = rms(z0 / scale), rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp(min=1e-30))
    h0 = h0.clamp(max=1.0)
    f1 = field(h0, z0 + h0[:, None] * f0)
    d2 = rms((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / dmax.clamp(min=1e-30)).pow(1.0 / order),
    )
    return torch.minimum(100 * h0, h1).clamp(min=MIN_STEP * 10, max=1.0)
