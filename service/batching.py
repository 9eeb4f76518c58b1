"""Micro-batching: concurrent requests' series are solved together by one inference thread.

Requests wait on an asyncio future; the thread owns the device, so the event loop never runs model
code. A batch starts when `max_batch_series` series are waiting or the oldest has waited
`max_wait_ms`; it takes requests of the same (model, latent samples, solver settings) in arrival
order: requests asking for different tolerances are solved in separate batches. Each series
is solved with its own query times and steps (see `models.solve`), so batching changes a forecast
only within the solver's tolerance (float32 kernels round differently at other batch sizes, which can
move an adaptive step). Queue limits answer 503 + Retry-After; expired requests are dropped before
solving.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from latentcast.models import PackedForecast, PackedSeries
from latentcast.service.errors import ServiceError
from latentcast.service.registry import ServedModel
from latentcast.service.validate import Job

log = logging.getLogger("latentcast.service")

# On a CPU, a batch of at most this many solver rows (series × latent samples) runs on one intra-op
# thread (waking the others after an idle gap costs more than they save: bench/results/optimizations.md).
SMALL_BATCH_ROWS = 256


@dataclasses.dataclass
class _Item:
    job: Job
    samples: int  # latent samples for this job
    future: asyncio.Future[PackedForecast]
    loop: asyncio.AbstractEventLoop
    deadline: float
    enqueued: float


@dataclasses.dataclass
class BatchStats:
    """Reported to the metrics hooks after every solve."""

    model: str
    series: int
    requests: int
    seconds: float
    nfe: int
    captures: int  # CUDA graphs captured during this solve (0 once warm)
    threads: int  # intra-op threads the solve ran on


class Batcher:
    def __init__(
        self,
        models: dict[str, ServedModel],
        *,
        enabled: bool,
        max_batch_series: int,
        max_wait_ms: float,
        max_queue_series: int,
        num_samples: int,
        max_queue_points: int = 1 << 62,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        small_batch_rows: int = SMALL_BATCH_ROWS,
    ):
        self.models = models
        self.enabled = enabled
        self.max_batch = max_batch_series
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue_series
        self.max_queue_points = max_queue_points
        self._queued_points = 0
        self.num_samples = num_samples
        self.on_batch = on_batch
        self.on_queue = on_queue
        self.small_batch_rows = small_batch_rows
        self.threads = torch.get_num_threads()  # the process's setting; small CPU batches use one
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_series = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="latentcast-inference", daemon=True)
        self._recent_batch_seconds = 0.05

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=30)

    @property
    def queued_series(self) -> int:
        return self._queued_series

    async def submit(self, job: Job, deadline: float) -> PackedForecast:
        """Queue a job and wait for its forecasts until `deadline` (`time.monotonic()`): 413 when the job
        alone exceeds the queue, 503 when the queue is full, 504 past the deadline (its solve stops
        there too, so the requests behind it are not delayed by it)."""
        if job.size > self.max_queue:
            raise ServiceError(
                413,
                f"{job.size} series; the most one request can queue is {self.max_queue} "
                "(LATENTCAST_MAX_QUEUE_SERIES): split the request",
            )
        points = job.points
        if points > self.max_queue_points:
            raise ServiceError(
                413,
                f"{points} observations + query times; the most one request can queue is {self.max_queue_points} "
                "(LATENTCAST_MAX_QUEUE_POINTS): split the request",
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        item = _Item(job, max(self.num_samples, job.num_samples), loop.create_future(), loop, deadline, now)
        with self._cv:
            if self._queued_points + points > self.max_queue_points:
                raise ServiceError(
                    503,
                    f"server busy: {self._queued_points} observations + query times queued (limit "
                    f"{self.max_queue_points}, LATENTCAST_MAX_QUEUE_POINTS); retry later",
                    headers={"Retry-After": str(self._retry_after())},
                )
            if self._queued_series + job.size > self.max_queue:
                raise ServiceError(
                    503,
                    f"server busy: {self._queued_series} series queued (limit "
                    f"{self.max_queue}, LATENTCAST_MAX_QUEUE_SERIES); retry later",
                    headers={"Retry-After": str(self._retry_after())},
                )
            self._queue.append(item)
            self._queued_series += job.size
            self._queued_points += points
            self._report_queue()
            self._cv.notify()
        try:
            return await asyncio.wait_for(item.future, timeout=max(0.0, deadline - now))  # cancels it on timeout
        except TimeoutError:
            raise deadline_error() from None

    def _retry_after(self) -> int:
        return max(1, round(self._recent_batch_seconds * (1 + self._queued_series / self.max_batch)))

    # ---------------------------------------------------------------------------------------------
    # inference thread

    def _report_queue(self) -> None:
        if self.on_queue is not None:
            self.on_queue(self._queued_series)

    def _take(self) -> list[_Item] | None:
        """Block until a batch is due; pop it. None when stopping."""
        with self._cv:
            while True:
                if self._stop:
                    return None
                if not self._queue:
                    self._cv.wait()
                    continue
                first = self._queue[0]
                due = first.enqueued + self.max_wait
                if self.enabled and self._queued_series < self.max_batch and time.monotonic() < due:
                    self._cv.wait(timeout=max(0.0, due - time.monotonic()))
                    continue
                batch: list[_Item] = []
                n = 0
                key = (first.job.model.name, first.samples, first.job.solver)
                for item in list(self._queue):
                    if (item.job.model.name, item.samples, item.job.solver) != key:
                        continue
                    if batch and (n + item.job.size > self.max_batch or not self.enabled):
                        break
                    batch.append(item)
                    n += item.job.size
                for item in batch:
                    self._queue.remove(item)
                self._queued_series -= n
                self._queued_points -= sum(item.job.points for item in batch)
                self._report_queue()
                return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for item in batch:
                if now >= item.deadline or item.future.cancelled():
                    continue  # its request has already answered 504 or gone away
                live.append(item)
            if live:
                self._solve(live)

    def _solve(self, items: list[_Item]) -> None:
        model = self.models[items[0].job.model.name]
        try:
            results = self._predict(model, items)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(items) > 1:  # retry each request alone before giving up
                for item in items:
                    self._solve([item])
                return
            self._fail(
                items,
                ServiceError(
                    503,
                    "out of GPU memory for this request; send fewer series or query times",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        except Exception as exc:  # a bug, not bad input: one request's failure must not fail the others
            if len(items) > 1:
                log.warning("a batch of %d requests failed (%s); solving each alone", len(items), exc)
                for item in items:
                    self._solve([item])
                return
            log.exception("inference failed")
            self._fail(items, exc)
            return
        for item, result in zip(items, results, strict=True):
            item.loop.call_soon_threadsafe(_resolve, item.future, result)

    def _predict(self, model: ServedModel, items: list[_Item]) -> list[PackedForecast]:
        packed = PackedSeries.concat([it.job.packed for it in items])
        levels = tuple(sorted({lv for it in items for lv in it.job.levels}))
        shown = max(it.job.num_samples for it in items)  # trajectories returned (the first of each)
        deadlines = np.repeat([it.deadline for it in items], [it.job.size for it in items])
        dyn = getattr(model.forecaster.model, "dynamics", None)
        nfe0 = dyn.nfe if dyn is not None else 0
        graphs = model.forecaster.graphs
        captures0 = graphs.captures
        threads = self.threads
        if model.forecaster.device.type == "cpu" and len(packed) * max(items[0].samples, 1) <= self.small_batch_rows:
            threads = 1
        torch.set_num_threads(threads)  # cheap; only this thread runs model code
        started = time.monotonic()
        t0 = time.perf_counter()
        out = model.forecaster.predict_packed(
            packed,
            levels=levels,
            num_samples=self.num_samples,
            return_samples=shown,
            deadlines=deadlines,
            solver=items[0].job.solver,
        )
        seconds = time.perf_counter() - t0
        captures = graphs.captures - captures0
        self._recent_batch_seconds = 0.8 * self._recent_batch_seconds + 0.2 * seconds
        for it in items:
            it.job.timing.update(
                queue=started - it.enqueued, solve=seconds, batch_series=len(packed), captures=captures
            )
        if self.on_batch is not None:
            nfe = (dyn.nfe if dyn is not None else 0) - nfe0
            self.on_batch(BatchStats(model.name, len(packed), len(items), seconds, nfe, captures, threads))
        return out.split([it.job.size for it in items])

    def _fail(self, items: list[_Item], exc: BaseException) -> None:
        for item in items:
            item.loop.call_soon_threadsafe(_reject, item.future, exc)


def _resolve(fut: asyncio.Future[PackedForecast], value: PackedForecast) -> None:
    if not fut.done():
        fut.set_result(value)


def _reject(fut: asyncio.Future[PackedForecast], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def deadline_error() -> ServiceError:
    return ServiceError(
        504,
        "the request's deadline passed before its forecast was ready (LATENTCAST_REQUEST_TIMEOUT_S); "
        "send fewer series or query times, or retry",
    )
