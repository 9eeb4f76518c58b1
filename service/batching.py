"""The inference threads' scheduler: requests are solved in slices of bounded cost, smallest remaining
work first, so no request waits behind a large one for more than one slice; and small requests have
an express thread of their own, so they do not wait at all behind a slice that cannot be cut finer
(a series of 1,000 observations walks its encoder 1,000 steps in one go).

Requests wait on an asyncio future; the threads own the device, so the event loop never runs model
code. Each request's cost is estimated when it arrives (`service.cost`: series × samples × (expected
vector-field evaluations + observations + query times), in seconds measured on this device); one that
could not finish within `max_request_seconds` is refused before it queues (413), and so is one that the
work queued ahead would push past its deadline (503 + Retry-After). The thread then
repeatedly takes a slice of about `slice_seconds` of work: the request with the least remaining work
leads, and other requests of the same model, latent samples and solver settings fill the slice
(micro-batching), a large one contributing a range of its series. A second, express thread takes
only requests estimated at no more than `express_seconds`, on its own copy of each model. Between
slices, a request whose deadline has passed or whose client has gone is dropped: nothing more is
solved for it; a slice in which no request is still wanted stops part-way (`Forecaster.predict_packed(wanted=...)`: the
encoder, the solver and the chunks check every few steps). Each series is solved with its own query
times and steps (see `models.solve`), so slicing and batching change a forecast only within the
solver's tolerance (float32 kernels round differently at other batch sizes, which can move an adaptive
step). Queue limits answer 503 + Retry-After.
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

from latentcast.models import Interrupted, PackedForecast, PackedSeries, Status
from latentcast.service.cost import CostModel
from latentcast.service.errors import ServiceError
from latentcast.service.registry import ServedModel
from latentcast.service.validate import Job

log = logging.getLogger("latentcast.service")

# On a CPU, a batch of at most this many solver rows (series × latent samples) runs on one intra-op
# thread (waking the others after an idle gap costs more than they save: bench/results/optimizations.md).


@dataclasses.dataclass(eq=False)  # compared by identity: it holds arrays
class _Item:
    job: Job
    samples: int  # latent samples for this job
    future: asyncio.Future[PackedForecast]
    loop: asyncio.AbstractEventLoop
    deadline: float
    enqueued: float
    units: np.ndarray  # (B,) estimated work per series (learned figures: admission, order)
    cuts: np.ndarray  # (B,) the same by the seeded figures alone: where slices are cut
    done: int = 0  # series solved so far (a prefix)
    parts: list[PackedForecast] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # estimated, alone
    express_seconds: float = 0.0  # the same by the seeded figures, without the large-solve factor
    started: float | None = None
    solve_seconds: float = 0.0
    largest_slice: int = 0
    busy: bool = False  # a lane is solving a slice of it

    @property
    def key(self) -> tuple[str, int, object]:
        return (self.job.model.name, self.samples, self.job.solver)

    @property
    def remaining(self) -> float:
        return float(self.units[self.done :].sum())

    @property
    def alive(self) -> bool:
        return not self.future.done() and time.monotonic() < self.deadline


@dataclasses.dataclass
class BatchStats:
    """Reported to the metrics hooks after every slice."""

    model: str
    series: int
    requests: int
    seconds: float
    nfe: int
    captures: int  # CUDA graphs captured during this solve (0 once warm)
    threads: int  # intra-op threads the solve ran on
    stopped: bool = False  # stopped part-way: every request in it had left or passed its deadline


@dataclasses.dataclass
class Done:
    """Reported when a request leaves the scheduler: solved, or dropped with nobody to read it."""

    model: str
    # "solved", "deadline" (its deadline passed), "gone" (its client left), "failed", "refused" (over
    # max_request_seconds), "busy" (refused: the queue ahead would push it past its deadline)
    outcome: str
    queue_seconds: float
    solve_seconds: float
    estimated_seconds: float


_Slice = list[tuple[_Item, int, int]]  # (request, first series, end)


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
        on_done: Callable[[Done], None] | None = None,
        slice_seconds: float = 0.05,
        max_request_seconds: float = float("inf"),
        costs: CostModel | None = None,
        express_seconds: float = 0.0,
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
        self.on_done = on_done
        self.slice_seconds = slice_seconds
        self.max_request_seconds = max_request_seconds
        self.costs = costs or CostModel()
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_series = 0
        self._cv = threading.Condition()
        self._stop = False
        self.express_seconds = express_seconds
        self._threads = [threading.Thread(target=self._run, args=(False,), name="latentcast-inference", daemon=True)]
        if express_seconds > 0 and all(m.express is not None for m in models.values()):
            self._threads.append(
                threading.Thread(target=self._run, args=(True,), name="latentcast-express", daemon=True)
            )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def queued_series(self) -> int:
        return self._queued_series

    def estimate(self, job: Job, learned: bool = True) -> tuple[np.ndarray, float]:
        """(B,) work per series of `job` and the seconds it would take alone on this device (learned=False:
        by the figures seeded at start, without what large solves have taught: they cut slices and choose
        the express lane, the same way however busy the server has been)."""
        samples = max(self.num_samples, job.num_samples)
        n_obs, n_q = np.diff(job.packed.offsets), np.diff(job.packed.query_offsets)
        n_ev = np.diff(job.packed.inputs.offsets) if job.packed.inputs is not None else None
        units = self.costs.units(job.model.name, job.solver_used, samples, n_obs, n_q, learned, n_ev)
        steps = int(n_obs.max()) if len(n_obs) else 0
        return units, self.costs.seconds(job.model.name, float(units.sum()), steps, self.slice_seconds, learned)

    async def submit(self, job: Job, deadline: float) -> PackedForecast:
        """Queue a job and wait for its forecasts until `deadline` (`time.monotonic()`): 413 when the job
        alone exceeds the queue or would take longer than `max_request_seconds`, 503 when the queue is
        full, 504 past the deadline (nothing more is solved for it then)."""
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
        units, seconds = self.estimate(job)
        if seconds > self.max_request_seconds:
            if self.on_done is not None:
                self.on_done(Done(job.model.name, "refused", 0.0, 0.0, seconds))
            raise ServiceError(
                413,
                f"this request would take about {seconds:.1f} s to solve on this server (estimated from its "
                f"series, samples, query times and tolerance); the limit is {self.max_request_seconds:g} s "
                "(LATENTCAST_MAX_REQUEST_SECONDS): split it, or ask for fewer samples or a looser tolerance",
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        samples = max(self.num_samples, job.num_samples)
        cuts, seeded = self.estimate(job, learned=False)
        item = _Item(job, samples, loop.create_future(), loop, deadline, now, units, cuts)
        item.seconds, item.express_seconds = seconds, seeded
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
            finish = self._finish_estimate(seconds)
            if finish > deadline - now and finish > seconds:  # the queue ahead, not the request itself
                if self.on_done is not None:
                    self.on_done(Done(job.model.name, "busy", 0.0, 0.0, seconds))
                raise ServiceError(
                    503,
                    f"server busy: with the work queued ahead this request would finish in about {finish:.1f} s, "
                    f"past its deadline in {deadline - now:.1f} s (LATENTCAST_REQUEST_TIMEOUT_S); retry later",
                    headers={"Retry-After": str(self._retry_after())},
                )
            self._queue.append(item)
            self._queued_series += job.size
            self._queued_points += points
            self._report_queue()
            self._cv.notify_all()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout=max(0.0, deadline - now))
        except TimeoutError:
            raise deadline_error() from None
        finally:
            if not item.future.done():  # past the deadline, or the caller cancelled (its client left)
                item.future.cancel()
                with self._cv:
                    self._cv.notify_all()

    def _finish_estimate(self, seconds: float) -> float:
        """Seconds until a new request of `seconds` alone would be answered (under the lock): slices go to
        the request with the least work left, so each queued request delays it by the lesser of its own
        remaining work and the new request's."""
        ahead = 0.0
        for it in self._queue:
            total = float(it.units.sum())
            left = it.seconds * (it.remaining / total) if total > 0 else 0.0
            ahead += min(left, seconds)
        return seconds + ahead

    def _retry_after(self) -> int:
        queued = sum(self.costs.seconds(it.job.model.name, it.remaining, 0, self.slice_seconds) for it in self._queue)
        return max(1, round(queued))

    # ---------------------------------------------------------------------------------------------
    # inference thread

    def _report_queue(self) -> None:
        if self.on_queue is not None:
            self.on_queue(self._queued_series)

    def _leave(self, item: _Item, outcome: str) -> None:
        """Take a request out of the queue (under the lock) and report how it ended."""
        self._queue.remove(item)
        self._queued_series -= item.job.size
        self._queued_points -= item.job.points
        self._report_queue()
        if self.on_done is not None:
            now = time.monotonic()
            queue = (item.started or now) - item.enqueued
            estimated = self.estimate(item.job)[1]
            self.on_done(Done(item.job.model.name, outcome, queue, item.solve_seconds, estimated))

    def _drop(self, item: _Item) -> None:
        """Take out a request nobody will read (under the lock): its client left, or its deadline passed."""
        gone = item.future.cancelled() and item.deadline > time.monotonic()
        self._leave(item, "gone" if gone else "deadline")

    def _take(self, express: bool) -> _Slice | None:
        """Block until work is due for this lane; return its next slice (its requests marked busy). None
        when stopping. The express lane takes only requests estimated at no more than express_seconds."""
        with self._cv:
            while True:
                if self._stop:
                    return None
                for item in list(self._queue):  # nobody will read these: drop them before any work
                    if not item.alive and not item.busy:
                        self._drop(item)
                ready = [
                    it
                    for it in self._queue
                    if not it.busy
                    and it.done < it.job.size
                    and (not express or it.express_seconds <= self.express_seconds)
                ]
                if not ready:
                    self._cv.wait()
                    continue
                oldest = min(it.enqueued for it in ready)
                due = oldest + self.max_wait
                if self.enabled and self._queued_series < self.max_batch and time.monotonic() < due:
                    self._cv.wait(timeout=max(0.0, due - time.monotonic()))
                    continue
                work = self._slice(ready)
                for item, _, _ in work:
                    item.busy = True
                return work

    def _slice(self, ready: list[_Item]) -> _Slice:
        """The request with the least remaining work leads; requests of its key fill about slice_seconds
        of work (all of it for a request that fits, a range of series for one that does not). A request
        whose series are longer than the slice's so far joins only if the encoder steps it adds fit too."""
        lead = min(ready, key=lambda it: (it.remaining, it.deadline))
        group = sorted((it for it in ready if it.key == lead.key), key=lambda it: (it.remaining, it.deadline))
        name = lead.job.model.name
        steps = int(np.diff(lead.job.packed.offsets)[lead.done :].max())  # the lead's longest series left
        budget = self.costs.slice_units(name, self.slice_seconds, steps)
        out: _Slice = []
        series = 0
        for item in group if self.enabled else [lead]:
            if out and (budget <= 0 or series >= self.max_batch):
                break
            per = item.cuts[item.done :]
            room = min(int(np.searchsorted(np.cumsum(per), budget, side="right")), self.max_batch - series)
            stop = item.done + max(room, 1 if not out else 0)
            if stop <= item.done:
                continue
            longest = int(np.diff(item.job.packed.offsets)[item.done : stop].max())
            extra = self.costs.fixed(name, max(longest, steps)) - self.costs.fixed(name, steps)
            if out and extra + float(per[: stop - item.done].sum()) > budget:
                continue  # its long series would make every row of the slice wait for their encoder
            out.append((item, item.done, stop))
            budget -= float(per[: stop - item.done].sum()) + extra
            series += stop - item.done
            steps = max(steps, longest)
        return out

    def _run(self, express: bool) -> None:
        while True:
            work = self._take(express)
            if work is None:
                return
            try:
                self._solve(work, express)
            except Exception as exc:  # a bug in the scheduler itself: fail these requests, keep the lane
                log.exception("the scheduler failed on a slice")
                self._fail(work, exc)
            finally:
                with self._cv:
                    for item, _, _ in work:
                        item.busy = False
                    self._cv.notify_all()

    def _solve(self, work: _Slice, express: bool = False) -> None:
        model = self.models[work[0][0].job.model.name]
        try:
            results = self._predict(model, work, express)
        except Interrupted:  # nobody waits for any request in the slice any more: the rest is not solved
            with self._cv:
                for item, _, _ in work:
                    if item in self._queue:
                        self._drop(item)
            return
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(work) > 1:  # retry each request's part alone before giving up
                for part in work:
                    self._solve([part], express)
                return
            self._fail(
                work,
                ServiceError(
                    503,
                    "out of GPU memory for this request; send fewer series or query times",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        except Exception as exc:  # a bug, not bad input: one request's failure must not fail the others
            if len(work) > 1:
                log.warning("a batch of %d requests failed (%s); solving each alone", len(work), exc)
                for part in work:
                    self._solve([part], express)
                return
            log.exception("inference failed")
            self._fail(work, exc)
            return
        with self._cv:
            for (item, _, stop), result in zip(work, results, strict=True):
                item.parts.append(result)
                item.done = stop
                if stop == item.job.size and item in self._queue:
                    if item.future.cancelled():  # its client left (or its deadline passed) during the slice
                        self._drop(item)
                        continue
                    self._leave(item, "solved")
                    forecast = PackedForecast.concat(item.parts)
                    item.loop.call_soon_threadsafe(_resolve, item.future, forecast)

    def _predict(self, model: ServedModel, work: _Slice, express: bool = False) -> list[PackedForecast]:
        forecaster = model.express if express and model.express is not None else model.forecaster
        packed = PackedSeries.concat([it.job.packed.take(a, z) for it, a, z in work])
        items = [it for it, _, _ in work]
        levels = tuple(sorted({lv for it in items for lv in it.job.levels}))
        shown = max(it.job.num_samples for it in items)  # trajectories returned (the first of each)
        deadlines = np.repeat([it.deadline for it in items], [z - a for _, a, z in work])
        nfe0, captures0 = forecaster.counters()
        threads = forecaster.threads_for(len(packed), items[0].samples)  # what the solve will use
        started = time.monotonic()
        t0 = time.perf_counter()
        try:
            out = forecaster.predict_packed(
                packed,
                levels=levels,
                num_samples=self.num_samples,
                return_samples=shown,
                deadlines=deadlines,
                solver=items[0].job.solver,
                wanted=lambda: any(it.alive for it in items),
            )
        except Interrupted:
            if self.on_batch is not None:
                nfe1, captures1 = forecaster.counters()
                seconds = time.perf_counter() - t0
                evals, captured = nfe1 - nfe0, captures1 - captures0
                self.on_batch(BatchStats(model.name, len(packed), len(work), seconds, evals, captured, threads, True))
            raise
        seconds = time.perf_counter() - t0
        nfe1, captures1 = forecaster.counters()
        steps = int(np.diff(packed.offsets).max())
        estimated = float(sum(it.units[a:z].sum() for it, a, z in work)) + self.costs.fixed(model.name, steps)
        # only what answered teaches the cost model: a series that ran out of steps (an input far out, say)
        # would have one client's bad request make everyone's look dearer
        ok = out.status == Status.OK
        nfe = float(out.nfe[ok].mean()) if ok.any() else 0.0
        self.costs.learn(model.name, items[0].job.solver_used, nfe, estimated if ok.all() else 0.0, seconds)
        for it in items:
            if it.started is None:
                it.started = started
            it.solve_seconds += seconds
            it.largest_slice = max(it.largest_slice, len(packed))
            it.job.timing.update(
                queue=it.started - it.enqueued,
                solve=it.solve_seconds,
                batch_series=it.largest_slice,
                captures=captures1 - captures0,
            )
        if self.on_batch is not None:
            self.on_batch(
                BatchStats(model.name, len(packed), len(work), seconds, nfe1 - nfe0, captures1 - captures0, threads)
            )
        return out.split([z - a for _, a, z in work])

    def _fail(self, work: _Slice, exc: BaseException) -> None:
        with self._cv:
            for item, _, _ in work:
                if item in self._queue:
                    self._leave(item, "failed")
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
