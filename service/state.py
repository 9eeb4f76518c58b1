"""What the app holds between requests, and the steps of a forecast that need it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from latentcast.models import PackedForecast
from latentcast.service import decoding, formats
from latentcast.service.batching import Batcher, deadline_error
from latentcast.service.config import Settings
from latentcast.service.decoding import DecodePool, content_encoding
from latentcast.service.errors import ServiceError
from latentcast.service.formats import Format
from latentcast.service.metrics import Metrics
from latentcast.service.outcome import outcome
from latentcast.service.registry import ServedModel
from latentcast.service.validate import Job, SpecLookup

T = TypeVar("T")
# compressed bodies up to this size are inflated on the event loop (deflate expands at most ~1,000×: a
# few MB, a few ms), not queued behind large uploads for the decode process
INLINE_COMPRESSED = 4096


@dataclasses.dataclass(frozen=True)
class Incoming:
    """A forecast request read and decoded: its job, the format its answer is written in, the
    `time.monotonic()` it must be answered by, and when its reading started and ended (perf_counter)."""

    job: Job
    answer_format: Format
    answer_bytes: int
    deadline: float
    started: float
    read: float


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
        """A body → Job: inline when small (a small compressed one inflated here first); larger ones, and
        larger compressed ones, in a decode process (their parse would hold this process's GIL, for up to a
        second), or on a worker thread without one."""
        s, lookup = self.settings, self.lookup
        if coding != "identity" and len(body) <= INLINE_COMPRESSED:  # inflates to a few MB at most: here
            body, coding = decoding.inflate(body, coding, s.max_body_bytes), "identity"
        size = fmt.decoded_size(body)
        if coding == "identity" and size <= s.offload_bytes:
            self.metrics.decodes.labels("inline").inc()
            return decoding.decode(decoding.key_of(fmt), coding, body, params, lookup, s)
        async with self._heavy():
            if self.decoder is not None:
                self.metrics.decodes.labels("process").inc()
                return await self.decoder.decode(decoding.key_of(fmt), coding, body, params, lookup, s)
            self.metrics.decodes.labels("thread").inc()
            return await asyncio.to_thread(decoding.decode, decoding.key_of(fmt), coding, body, params, lookup, s)

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
        if not job.size:  # every series refused (on_error=skip): nothing to solve
            return PackedForecast.empty(job.model.n_channels, job.levels, job.num_samples)
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

    async def receive(
        self, request: Request, route: Format | None = None, params: Mapping[str, str] | None = None
    ) -> Incoming:
        """Read and decode a forecast request under the limits: the formats asked for (or the `route`'s own,
        which takes `params` instead of the query string), the body's size and time, and the size its answer
        could take (413 before any solve)."""
        t0 = time.perf_counter()
        settings = self.settings
        deadline = time.monotonic() + settings.request_timeout_s
        types = request.headers.getlist("content-type")
        if len(types) > 1:
            raise ServiceError(400, "Content-Type is given more than once; give it once")
        if route is not None:
            body_format = answer_format = route
            params = params or {}
        else:
            body_format = formats.of_body(types[0] if types else None)
            answer_format = formats.of_answer(", ".join(request.headers.getlist("accept")) or None, body_format)
            params = query_params(request)
        coding = content_encoding(", ".join(request.headers.getlist("content-encoding")) or None)
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        job = await self.decode(body_format, coding, body, params)
        request.scope.setdefault("state", {})["series"] = job.n_series  # for the access metrics
        size = answer_format.answer_bytes(job)
        if size > settings.max_response_bytes:
            raise ServiceError(
                413,
                f"the answer could take {size} bytes; the limit is {settings.max_response_bytes} "
                "(LATENTCAST_MAX_RESPONSE_BYTES): split the request or ask for fewer query times, quantiles or "
                "samples",
            )
        return Incoming(job, answer_format, size, deadline, t0, time.perf_counter())

    async def answer(self, incoming: Incoming, fc: PackedForecast) -> Response:
        """The forecast's outcome (answers, refusals, warnings), counted, encoded (on a worker thread when
        large), with where the request's time went (Server-Timing)."""
        job, settings = incoming.job, self.settings
        solved = time.perf_counter()
        out = outcome(job, fc, settings.unusual_output_scales)
        self.metrics.count_outcome(job.model.name, out)
        encode = incoming.answer_format.encode
        content = await self.offload(incoming.answer_bytes > settings.offload_bytes, encode, job, out)
        timing = server_timing(
            job, incoming.read - incoming.started, solved - incoming.read, time.perf_counter() - solved
        )
        return Response(content, media_type=incoming.answer_format.MEDIA_TYPE, headers={"Server-Timing": timing})


def query_params(request: Request) -> Mapping[str, str]:
    """The query parameters; 400 when one is given twice (which copy counts must not be a guess)."""
    items = request.query_params.multi_items()
    names = [k for k, _ in items]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise ServiceError(400, f"query parameter {twice[0]!r} is given more than once; give it once")
    return dict(items)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing anything over `limit` bytes (413) without reading it all, and a body
    still arriving after `timeout` seconds (408: a trickled upload must not hold a slot forever)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, f"body of {declared} bytes; the limit is {limit} (LATENTCAST_MAX_BODY_BYTES)")
    chunks, size = [], 0

    async def receive() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, f"body over {limit} bytes (LATENTCAST_MAX_BODY_BYTES)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        raise ServiceError(
            408,
            f"the body did not arrive within {timeout:g} s (LATENTCAST_BODY_TIMEOUT_S)",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ServiceError(499, "the client went away before sending its whole body") from None
    return b"".join(chunks)


def server_timing(job: Job, read_s: float, wait_s: float, render_s: float) -> str:
    """Where this request's time went (Server-Timing, ms): read + validate, queued for the inference
    thread, the solve of its batch, the hand-back to the event loop, render; and its batch's size and
    CUDA graph captures. Load tests read it to explain slow requests."""
    t = job.timing
    queue, solve = t.get("queue", 0.0), t.get("solve", 0.0)
    handback = max(0.0, wait_s - queue - solve)
    parts = [("read", read_s), ("queue", queue), ("solve", solve), ("handback", handback), ("render", render_s)]
    out = ", ".join(f"{k};dur={v * 1e3:.2f}" for k, v in parts)
    return f'{out}, batch;desc="{int(t.get("batch_series", 0))}", captures;desc="{int(t.get("captures", 0))}"'
