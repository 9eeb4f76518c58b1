"""What the app holds between requests, and the steps of a forecast that need it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from latentcast.models import PackedForecast
from latentcast.service.batching import Batcher, deadline_error
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.metrics import Metrics
from latentcast.service.registry import ServedModel
from latentcast.service.validate import Job, ModelSpec

T = TypeVar("T")


@dataclasses.dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    models: dict[str, ServedModel] = dataclasses.field(default_factory=dict)
    default: str = ""
    batcher: Batcher | None = None
    ready: bool = False
    failure: str | None = None
    heavy: asyncio.Semaphore | None = None  # offloaded decodes/encodes at a time

    async def offload(self, heavy: bool, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), on a worker thread when `heavy` (at most max_heavy_requests at a time), so that a
        large body's Python never holds up the event loop (and /healthz) for its whole duration."""
        if not heavy:
            return fn(*args)
        if self.heavy is None:
            self.heavy = asyncio.Semaphore(self.settings.max_heavy_requests)
        async with self.heavy:
            return await asyncio.to_thread(fn, *args)

    def lookup(self, name: str | None) -> ModelSpec:
        """A served model by name (None: the default); 404 naming the served ones otherwise."""
        served = self.models.get(name or self.default)
        if served is None:
            raise ServiceError(
                404,
                f"unknown model {name!r}; served: {sorted(self.models)} (GET /models)",
                [{"loc": ["model"], "msg": "unknown model", "series_id": None}],
            )
        return served.spec

    async def forecast(self, job: Job, deadline: float, gone: Callable[[], Awaitable[object]]) -> PackedForecast:
        """Queue a job for the inference thread and wait for it until `deadline` (`time.monotonic()`) or
        until `gone()` returns (its client left: the job is dropped, 499), counting it in the metrics."""
        assert self.batcher is not None
        if time.monotonic() >= deadline:  # decoding alone took the request's time
            raise deadline_error()
        m = self.metrics
        m.series_per_request.observe(job.size)
        m.inflight.inc()
        solve = asyncio.ensure_future(self.batcher.submit(job, deadline))
        left = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({solve, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            m.inflight.dec()
            for task in (solve, left):
                if not task.done():
                    task.cancel()  # the solve's cancellation drops the job from the scheduler
        if not solve.done() or solve.cancelled():
            raise ServiceError(499, "the client went away before its forecast was ready")
        fc = solve.result()
        m.queue_seconds.observe(job.timing.get("queue", 0.0))
        return fc
