"""What the app holds between requests, and the steps of a forecast that need it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from latentcast.models import PackedForecast
from latentcast.service import decoding
from latentcast.service.batching import Batcher, deadline_error
from latentcast.service.config import Settings
from latentcast.service.decoding import DecodePool
from latentcast.service.errors import ServiceError
from latentcast.service.formats import Format
from latentcast.service.metrics import Metrics
from latentcast.service.registry import ServedModel
from latentcast.service.validate import Job, SpecLookup

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
    decoder: DecodePool | None = None  # processes for the largest bodies
    specs: SpecLookup | None = None

    async def offload(self, heavy: bool, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), on a worker thread when `heavy` (at most max_heavy_requests at a time), so that a
        large answer's Python never holds up the event loop (and /healthz) for its whole duration."""
        if not heavy:
            return fn(*args)
        async with self._heavy():
            return await asyncio.to_thread(fn, *args)

    def _heavy(self) -> asyncio.Semaphore:
        if self.heavy is None:
            self.heavy = asyncio.Semaphore(self.settings.max_heavy_requests)
        return self.heavy

    async def decode(self, fmt: Format, coding: str, body: bytes, params: Mapping[str, str]) -> Job:
        """A body → Job: inline when small; larger ones, and compressed ones, in a decode process (their parse
        would hold this process's GIL, for up to a second), or on a worker thread without one."""
        s, lookup = self.settings, self.lookup
        size = fmt.decoded_size(body)
        if coding == "identity" and size <= s.offload_bytes:
            self.metrics.decodes.labels("inline").inc()
            return decoding.decode(fmt.MEDIA_TYPE, coding, body, params, lookup, s)
        async with self._heavy():
            if self.decoder is not None:
                self.metrics.decodes.labels("process").inc()
                return await self.decoder.decode(fmt.MEDIA_TYPE, coding, body, params, lookup, s)
            self.metrics.decodes.labels("thread").inc()
            return await asyncio.to_thread(decoding.decode, fmt.MEDIA_TYPE, coding, body, params, lookup, s)

    @property
    def lookup(self) -> SpecLookup:
        """A served model's spec by name (None: the default); 404 naming the served ones otherwise."""
        if self.specs is None or self.specs.specs.keys() != self.models.keys():
            self.specs = SpecLookup({n: m.spec for n, m in self.models.items()}, self.default)
        return self.specs

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
