"""The micro-batcher: concurrent jobs share one solve and get exactly what they would get alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
import torch

from latentcast.models import Limits, Series, Status, TimeSpec
from latentcast.models.forecast import per_series
from latentcast.models.packed import PackedSeries
from latentcast.service.batching import Batcher, BatchStats, Done
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.registry import ServedModel, load_models
from latentcast.service.validate import Echo, Job, ModelSpec

TOY = ModelSpec("toy", "v1", ("x", "y"), Limits(TimeSpec("unitless", 1.0)))
# a series solved in a slice of another size: kernels sized by the batch round differently, which can move
# an adaptive step whose error estimate sits at the threshold (the toy solves at rtol 1e-4). The sliced
# tests keep their horizons short (spread 0.01): at t ≈ 300 the toy's trajectories grow and one such move
# shifted a value by 5%, while the solver's own error there is of that order too.
SLICED = {"rtol": 5e-3, "atol": 5e-3}


def _job(i: int, n_series: int = 2, spread: float = 1.0) -> Job:
    """Series k of job i: 4 observations in [0, 1], query times 1.5, -0.2 and 0.5, shifted by spread · k."""
    rng = np.random.default_rng(i)
    series = [
        Series(id=f"j{i}s{k}", times=np.sort(rng.uniform(0, 1, 4)), values=rng.uniform(1, 2, (4, 2)).astype(np.float32))
        for k in range(n_series)
    ]
    queries = [np.array([1.5, -0.2, 0.5]) + spread * k for k in range(n_series)]
    packed = PackedSeries.from_series(series, queries)
    echo = Echo(packed.query_offsets, lists=[[1.5, -0.2, 0.5]] * n_series)
    return Job(TOY, packed, echo, (0.1, 0.9), 0)


def _toy_batcher(checkpoints, num_samples: int, **options: Any) -> tuple[dict[str, ServedModel], Batcher]:
    """The toy model on the CPU and a started Batcher over it (the caller stops it)."""
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=num_samples)
    models = load_models(settings, torch.device("cpu"))
    kwargs: dict[str, Any] = {"enabled": True, "max_batch_series": 64, "max_wait_ms": 0, "max_queue_series": 100}
    batcher = Batcher(models, num_samples=num_samples, **{**kwargs, **options})
    batcher.start()
    return models, batcher


@pytest.mark.parametrize("enabled", [True, False])
def test_concurrent_jobs_share_a_solve_and_match_solo(checkpoints, enabled: bool) -> None:
    stats: list[BatchStats] = []
    models, batcher = _toy_batcher(checkpoints, 8, enabled=enabled, max_wait_ms=50, on_batch=stats.append)
    jobs = [_job(i) for i in range(4)]

    async def run() -> list:
        return await asyncio.gather(*(batcher.submit(j, _soon(10.0)) for j in jobs))

    try:
        results = asyncio.run(run())
    finally:
        batcher.stop()
    if enabled:
        assert [s.series for s in stats] == [8] and stats[0].requests == 4 and stats[0].nfe > 0
    else:
        assert [s.series for s in stats] == [2, 2, 2, 2]
    fc = models["toy"].forecaster
    for job, res in zip(jobs, results, strict=True):
        solo = fc.predict_packed(job.packed, levels=job.levels)
        for a, b in zip(per_series(res), per_series(solo), strict=True):
            assert a.id == b.id
            np.testing.assert_allclose(a.mean, b.mean, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(a.quantiles[0.9], b.quantiles[0.9], rtol=1e-4, atol=1e-6)


def _soon(seconds: float) -> float:
    return time.monotonic() + seconds


def test_queue_limit(checkpoints) -> None:
    models, batcher = _toy_batcher(checkpoints, 4, max_queue_series=3)
    try:
        with pytest.raises(ServiceError) as info:  # more than the queue holds: retrying cannot help
            asyncio.run(batcher.submit(_job(0, n_series=4), _soon(5.0)))
        assert info.value.status == 413 and "LATENTCAST_MAX_QUEUE_SERIES" in info.value.detail
        assert len(asyncio.run(batcher.submit(_job(1, n_series=3), _soon(5.0)))) == 3
    finally:
        batcher.stop()
    idle = Batcher(models, enabled=True, max_batch_series=64, max_wait_ms=0, max_queue_series=3, num_samples=4)

    async def full_queue() -> None:  # nobody solves: the first job stays queued
        waiting = asyncio.ensure_future(idle.submit(_job(2, n_series=2), _soon(0.5)))
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as info:
            await idle.submit(_job(3, n_series=2), _soon(5.0))
        assert info.value.status == 503 and "Retry-After" in info.value.headers
        with pytest.raises(ServiceError, match="deadline"):
            await waiting

    asyncio.run(full_queue())


def test_a_failing_request_does_not_fail_its_batch(checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever breaks a batch is retried request by request: only the request that breaks alone fails."""
    stats: list[BatchStats] = []
    models, batcher = _toy_batcher(checkpoints, 4, max_wait_ms=100, on_batch=stats.append)
    fc = models["toy"].forecaster
    real = fc.predict_packed

    def fragile(packed: PackedSeries, *a: Any, **k: Any) -> Any:
        if any(i.startswith("j1") for i in packed.ids):
            raise RuntimeError("poison")
        return real(packed, *a, **k)

    monkeypatch.setattr(fc, "predict_packed", fragile)
    good, poison = _job(0), _job(1)

    async def run() -> list[Any]:
        jobs = (batcher.submit(good, _soon(10.0)), batcher.submit(poison, _soon(10.0)))
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    try:
        ok, bad = asyncio.run(run())
    finally:
        batcher.stop()
    assert isinstance(bad, RuntimeError) and str(bad) == "poison"
    np.testing.assert_allclose(ok.mean, real(good.packed, levels=good.levels).mean, rtol=1e-5, atol=1e-6)


def test_a_request_past_its_deadline_stops_solving_and_frees_the_queue(checkpoints) -> None:
    models, batcher = _toy_batcher(checkpoints, 4)
    try:
        with pytest.raises(ServiceError) as info:
            asyncio.run(batcher.submit(_job(0), _soon(0.0)))
        assert info.value.status == 504 and "LATENTCAST_REQUEST_TIMEOUT_S" in info.value.detail
        job = _job(1)
        after = asyncio.run(batcher.submit(job, _soon(10.0)))
    finally:
        batcher.stop()
    np.testing.assert_allclose(
        after.mean, models["toy"].forecaster.predict_packed(job.packed, levels=job.levels).mean, rtol=1e-5
    )


@pytest.mark.parametrize(("small_rows", "expect_one"), [(10_000, True), (0, False)])
def test_small_cpu_batches_run_on_one_thread_and_match(checkpoints, small_rows: int, expect_one: bool) -> None:
    """A batch of at most LATENTCAST_CPU_SMALL_BATCH_ROWS rows (series × samples) runs on one intra-op thread (no
    thread to wake after an idle gap); larger ones on the process's setting. Same forecasts either way."""
    stats: list[BatchStats] = []
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=8, cpu_small_batch_rows=small_rows)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as on the 2-core machine, whatever this one has: the policy reads it at loading
    try:
        models = load_models(settings, torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert models["toy"].forecaster.threads.most == 2
    kwargs: dict[str, Any] = {"enabled": True, "max_batch_series": 64, "max_wait_ms": 0, "max_queue_series": 100}
    batcher = Batcher(models, num_samples=8, on_batch=stats.append, **kwargs)
    batcher.start()
    job = _job(7)
    try:
        result = asyncio.run(batcher.submit(job, _soon(10.0)))
    finally:
        batcher.stop()
    assert [s.threads for s in stats] == [1 if expect_one else 2]
    solo = models["toy"].forecaster.predict_packed(job.packed, levels=job.levels)
    np.testing.assert_allclose(result.mean, solo.mean, rtol=1e-5, atol=1e-6)


def test_a_small_job_is_not_queued_behind_a_large_one(checkpoints) -> None:
    """The large job is cut into slices; the small one, arriving after it started, is solved between two
    of them and finishes first. Both get what they get alone (to the solver's tolerance)."""
    stats: list[BatchStats] = []
    done: list[Done] = []
    models, batcher = _toy_batcher(
        checkpoints,
        4,
        max_batch_series=512,
        max_queue_series=1000,
        on_batch=stats.append,
        on_done=done.append,
        slice_seconds=0.001,
    )
    large, small = _job(0, n_series=300, spread=0.01), _job(1, n_series=1)
    finished: list[str] = []

    async def run() -> tuple[Any, Any]:
        async def one(job: Job, name: str) -> Any:
            out = await batcher.submit(job, _soon(60.0))
            finished.append(name)
            return out

        big = asyncio.ensure_future(one(large, "large"))
        while not stats and not big.done():  # the large job's first slice is solved
            await asyncio.sleep(0.001)
        return await asyncio.gather(big, one(small, "small"))

    try:
        got_large, got_small = asyncio.run(run())
    finally:
        batcher.stop()
    assert finished == ["small", "large"]
    assert len([s for s in stats if s.requests == 1 and s.series > 1]) > 5  # the large one, in slices
    assert sorted(d.outcome for d in done) == ["solved", "solved"]
    fc = models["toy"].forecaster
    for job, got in ((large, got_large), (small, got_small)):
        alone = fc.predict_packed(job.packed, levels=job.levels)
        np.testing.assert_allclose(got.mean, alone.mean, rtol=SLICED["rtol"], atol=SLICED["atol"])


def test_nothing_more_is_solved_for_a_job_nobody_will_read(checkpoints) -> None:
    """Between slices, a job past its deadline or whose caller gave up is dropped, and said so."""
    stats: list[BatchStats] = []
    done: list[Done] = []
    _models, batcher = _toy_batcher(
        checkpoints,
        4,
        max_batch_series=512,
        max_queue_series=1000,
        on_batch=stats.append,
        on_done=done.append,
        slice_seconds=0.001,
    )

    async def give_up() -> None:
        waiting = asyncio.ensure_future(batcher.submit(_job(0, n_series=300), _soon(60.0)))
        while not stats and not waiting.done():
            await asyncio.sleep(0.001)
        waiting.cancel()  # what the route does when its client disconnects
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(1000):  # dropped by the lane (else the next job is refused as queued behind it)
            if done:
                break
            await asyncio.sleep(0.005)
        with pytest.raises(ServiceError, match="deadline"):
            await batcher.submit(_job(1, n_series=300), _soon(0.05))

    try:
        asyncio.run(give_up())
        time.sleep(0.2)
    finally:
        batcher.stop()
    assert [d.outcome for d in done] == ["gone", "deadline"]
    solved = sum(s.series for s in stats)
    assert solved < 600  # neither job was solved to its end


def test_a_job_that_would_take_too_long_is_refused_before_it_queues(checkpoints) -> None:
    done: list[Done] = []
    _models, batcher = _toy_batcher(checkpoints, 4, on_done=done.append, max_request_seconds=1e-9)
    try:
        with pytest.raises(ServiceError) as info:
            asyncio.run(batcher.submit(_job(0), _soon(10.0)))
    finally:
        batcher.stop()
    assert info.value.status == 413 and "LATENTCAST_MAX_REQUEST_SECONDS" in info.value.detail
    assert [d.outcome for d in done] == ["refused"] and batcher.queued_series == 0


def test_a_request_the_queue_would_push_past_its_deadline_is_refused_up_front(checkpoints) -> None:
    """503 + Retry-After before queueing, rather than a 504 after the deadline: each queued request delays a
    new one by the lesser of its remaining work and the new one's (smallest remaining work goes first)."""
    done: list[Done] = []
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=4)
    models = load_models(settings, torch.device("cpu"))
    batcher = Batcher(models, enabled=True, max_batch_series=64, max_wait_ms=0, max_queue_series=1000, num_samples=4)
    batcher.on_done = done.append  # not started: what is queued stays queued
    batcher.costs.seed("toy", TOY.solver, 0.0, 0.0, np.array([1e-3, 0.0, 0.0]), 20.0)  # 0.08 s per series

    async def run() -> tuple[ServiceError, asyncio.Task[Any]]:
        large = asyncio.ensure_future(batcher.submit(_job(0, n_series=300), _soon(60.0)))  # 24 s of work
        await asyncio.sleep(0.01)
        small = asyncio.ensure_future(batcher.submit(_job(1, n_series=1), _soon(1.0)))  # 0.08 s + 0.08 s ahead
        await asyncio.sleep(0.01)
        with pytest.raises(ServiceError) as info:
            await batcher.submit(_job(2, n_series=10), _soon(1.2))  # 0.8 s alone, + 0.8 + 0.08 s ahead
        assert not small.done()  # admitted and queued
        for task in (large, small):
            task.cancel()
        return info.value, small

    refused, _ = asyncio.run(run())
    assert (
        refused.status == 503 and "LATENTCAST_REQUEST_TIMEOUT_S" in refused.detail and "about 1.7 s" in refused.detail
    )
    assert int(refused.headers["Retry-After"]) >= 1
    assert [d.outcome for d in done] == ["busy"]


def test_the_express_lane_answers_small_jobs_beside_a_large_one(checkpoints) -> None:
    """Two lanes take from one queue: small jobs arriving over time while a large one is solved are all
    answered, each by one lane, with what they get alone."""
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=4, express_seconds=1.0)
    models = load_models(settings, torch.device("cpu"))
    assert models["toy"].express is not None and models["toy"].express is not models["toy"].forecaster
    batcher = Batcher(
        models,
        enabled=True,
        max_batch_series=512,
        max_wait_ms=0,
        max_queue_series=1000,
        num_samples=4,
        slice_seconds=0.001,
        express_seconds=1.0,
    )
    batcher.start()
    large = _job(0, n_series=300, spread=0.01)
    batcher.costs.seed("toy", TOY.solver, 0.0, 0.0, np.array([1e-6, 1e-6, 1e-6]), 20.0)
    smalls = [_job(i + 1, n_series=1) for i in range(30)]

    async def run() -> list[Any]:
        async def later(k: int, job: Job) -> Any:
            await asyncio.sleep(0.002 * k)
            return await batcher.submit(job, _soon(30.0))

        return await asyncio.gather(batcher.submit(large, _soon(30.0)), *(later(k, j) for k, j in enumerate(smalls)))

    try:
        results = asyncio.run(run())
    finally:
        batcher.stop()
    fc = models["toy"].forecaster
    for job, got in zip([large, *smalls], results, strict=True):
        np.testing.assert_allclose(
            got.mean, fc.predict_packed(job.packed, levels=job.levels).mean, rtol=SLICED["rtol"], atol=SLICED["atol"]
        )


def test_what_large_solves_teach_moves_admission_not_slices_or_the_express_lane(checkpoints) -> None:
    _, batcher = _toy_batcher(checkpoints, 4, express_seconds=1.0)
    try:
        job = _job(0, n_series=8)
        batcher.costs.seed("toy", TOY.solver, 0.01, 1e-4, np.array([1e-6, 1e-6, 1e-6]), 20.0)
        _, learned0 = batcher.estimate(job)
        _, seeded0 = batcher.estimate(job, learned=False)
        for _ in range(30):  # large solves much slower than estimated (a loaded machine, a missed cost)
            batcher.costs.learn("toy", TOY.solver, 20.0, 1.0, 8.0)
        _, learned1 = batcher.estimate(job)
        _, seeded1 = batcher.estimate(job, learned=False)
    finally:
        batcher.stop()
    assert learned1 > 5 * learned0  # admission: the correction factor
    assert seeded1 == pytest.approx(seeded0)  # slices and the express lane: as seeded


def test_a_slice_whose_client_leaves_stops_part_way_and_is_counted_gone(checkpoints, monkeypatch) -> None:
    import threading

    done: list[Done] = []
    stats: list[BatchStats] = []
    models, batcher = _toy_batcher(checkpoints, 4, on_done=done.append, on_batch=stats.append)
    fc = models["toy"].forecaster
    solving, release = threading.Event(), threading.Event()
    predict = fc.predict_packed

    def slow(*args: Any, **kw: Any) -> Any:
        solving.set()
        release.wait(10.0)  # the client leaves while this slice is solved
        return predict(*args, **kw)

    monkeypatch.setattr(fc, "predict_packed", slow)

    async def run() -> None:
        task = asyncio.ensure_future(batcher.submit(_job(0), _soon(30.0)))
        while not solving.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.sleep(0.05)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
        for _ in range(200):
            if done:
                break
            time.sleep(0.01)
    finally:
        batcher.stop()
    assert [d.outcome for d in done] == ["gone"] and batcher.queued_series == 0
    assert [s.stopped for s in stats] == [True] and stats[0].nfe == 0  # stopped before the solve


def test_a_series_the_solver_could_not_answer_teaches_the_cost_model_nothing(checkpoints, monkeypatch) -> None:
    """A request whose series run out of steps (an input far out) must not make the next client's request
    look dearer: admission stays where the answered solves put it."""
    import dataclasses as dc

    models, batcher = _toy_batcher(checkpoints, 4, max_wait_ms=0)
    fc = models["toy"].forecaster
    real = fc.predict_packed

    def out_of_steps(packed: PackedSeries, *a: Any, **k: Any) -> Any:
        out = real(packed, *a, **k)
        if any(i.startswith("j9") for i in packed.ids):
            return dc.replace(out, status=np.full(len(out), int(Status.MAX_STEPS)), nfe=np.full(len(out), 2000.0))
        return out

    monkeypatch.setattr(fc, "predict_packed", out_of_steps)
    try:
        batcher.costs.seed("toy", TOY.solver, 0.0, 0.0, np.array([1e-6, 1e-6, 1e-6]), 20.0)
        _, before = batcher.estimate(_job(0, n_series=8))
        for _ in range(3):
            asyncio.run(batcher.submit(_job(9), _soon(10.0)))
        _, after = batcher.estimate(_job(0, n_series=8))
        asyncio.run(batcher.submit(_job(1), _soon(10.0)))  # an answered solve still teaches
        _, answered = batcher.estimate(_job(0, n_series=8))
    finally:
        batcher.stop()
    assert after == pytest.approx(before)
    assert answered != pytest.approx(before)
