"""CUDA graphs of the solver step: each step replayed as one captured graph over static buffers, per
padded shape. `GraphCache` holds them; whoever owns the model owns its cache (the `Forecaster`), so
nothing about graphs lives in module globals."""

from __future__ import annotations

import collections
import dataclasses
import threading
import warnings
import weakref
from collections.abc import Callable

import torch

from latentcast.models.config import SolverConfig
from latentcast.models.solve.step import Problem, State, VectorField, make_step


def bucket(n: int, least: int) -> int:
    """Next power of two ≥ max(n, least): graphs are captured per padded shape and reused."""
    return max(least, 1 << max(0, n - 1).bit_length())


@dataclasses.dataclass
class Graph:
    """A captured step over static buffers: copy a call's problem and state in, replay, read out.
    Off CUDA (tests) `graph` is None and replay runs the same step eagerly on the same buffers.
    `step` is kept alive with the graph: its closure owns tensors the graph reads (row offsets, window
    indices), which the caching allocator would otherwise hand to other tensors. `owners`: weak
    references to the vector field and readout whose parameters the graph reads in place."""

    graph: torch.cuda.CUDAGraph | None
    step: Callable[[State], State]
    problem: Problem
    state: State
    owners: tuple[Callable[[], object], ...]

    def owned_by(self, func: VectorField, readout: torch.nn.Linear | None) -> bool:
        return all(ref() is obj for ref, obj in zip(self.owners, (func, readout), strict=True))

    def replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            _assign(self.state, self.step(self.state))


def _assign(dst: State, src: State) -> None:
    for a, b in zip(dst.tensors(), src.tensors(), strict=True):
        a.copy_(b)


def _refs(func: VectorField, readout: torch.nn.Linear | None) -> tuple[Callable[[], object], ...]:
    return (weakref.ref(func), weakref.ref(readout) if readout is not None else lambda: None)


def capture(
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
) -> Graph:
    """Capture one step for these padded shapes, on zeroed buffers (every row done: a no-op step)."""
    problem = Problem(
        span=torch.zeros(r, dtype=dtype, device=dev),
        s_pad=torch.zeros(r, width, dtype=dtype, device=dev),
        stages=torch.zeros(n_buf, r, lat, dtype=dtype, device=dev),
        out=torch.zeros(r * width, lat if readout is None else readout.out_features, dtype=dtype, device=dev),
        window=w,
    )
    state = State(
        z=torch.zeros(r, lat, dtype=dtype, device=dev),
        s=torch.zeros(r, dtype=dtype, device=dev),
        h=torch.ones(r, dtype=dtype, device=dev),
        done=torch.ones(r, dtype=torch.bool, device=dev),
        status=torch.zeros(r, dtype=torch.long, device=dev),
        steps=torch.zeros(r, dtype=torch.long, device=dev),
        tries=torch.zeros(r, dtype=torch.long, device=dev),
        ptr=torch.zeros(r, dtype=torch.long, device=dev),
    )
    step = make_step(func, cfg, problem, readout)
    if dev.type != "cuda":
        return Graph(graph=None, step=step, problem=problem, state=state, owners=_refs(func, readout))
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):  # warm-up outside the graph (cuBLAS handles, workspaces)
        for _ in range(2):
            step(state)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _assign(state, step(state))
    return Graph(graph=graph, step=step, problem=problem, state=state, owners=_refs(func, readout))


class GraphCache:
    """Captured step graphs by padded shape, least recently used dropped beyond `size`. A graph's
    buffers are shared, so one solve at a time uses the cache (`lock`). `captures` counts captures
    (one during traffic is a latency spike)."""

    def __init__(self, size: int = 48):
        self.size = size
        self.lock = threading.Lock()
        self.captures = 0
        self._graphs: collections.OrderedDict[tuple[object, ...], Graph | None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    def get(
        self,
        key: tuple[object, ...],
        func: VectorField,
        readout: torch.nn.Linear | None,
        build: Callable[[], Graph],
    ) -> Graph | None:
        """The graph for `key`, captured on first use; None if capture failed here before."""
        if key in self._graphs:
            hit = self._graphs[key]
            if hit is None or hit.owned_by(func, readout):  # not new modules that reuse freed ones' ids
                self._graphs.move_to_end(key)
                return hit
            del self._graphs[key]
        self.captures += 1
        try:
            entry: Graph | None = build()
        except RuntimeError as exc:  # an op that cannot be captured: solve eagerly from now on
            warnings.warn(f"CUDA graph capture failed, solving eagerly: {exc}", RuntimeWarning, stacklevel=3)
            entry = None
        self._graphs[key] = entry
        while len(self._graphs) > self.size:
            self._graphs.popitem(last=False)
        return entry
