"""The micro-batcher: concurrent jobs share one solve and get exactly what they would get alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models import Series
from models.forecast import per_series
from models.packed import PackedSeries
from service.batching import Batcher, BatchStats
from service.config import Settings
from service.errors import ServiceError
from service.prepare import Job
from service.registry import load_models


def _job(i: int, n_series: int = 2) -> Job:
    rng = np.random.default_rng(i)
    series = [
        Series(id=f"j{i}s{k}", times=np.sort(rng.uniform(0, 1, 4)), values=rng.uniform(1, 2, (4, 2)).astype(np.float32))
        for k in range(n_series)
    ]
    queries = [np.array([1.5, -0.2, 0.5]) + k for k in range(n_series)]
    return Job("toy", PackedSeries.from_series(series, queries), [[1.5, -0.2, 0.5]] * n_series, (0.1, 0.9), 0)


@pytest.mark.parametrize("enabled", [True, False])
def test_concurrent_jobs_share_a_solve_and_match_solo(checkpoints, enabled: bool) -> None:
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=8)
    models = load_models(settings, __import__("torch").device("cpu"))
    stats: list[BatchStats] = []
    batcher = Batcher(
        models,
        enabled=enabled,
        max_batch_series=64,
        max_wait_ms=50,
        max_queue_series=100,
        num_samples=8,
        on_batch=stats.append,
    )
    batcher.start()
    jobs = [_job(i) for i in range(4)]

    async def run() -> list:
        return await asyncio.gather(*(batcher.submit(j, 10.0) for j in jobs))

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


def test_queue_limit(checkpoints) -> None:
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=4)
    models = load_models(settings, __import__("torch").device("cpu"))
    batcher = Batcher(models, enabled=True, max_batch_series=64, max_wait_ms=0, max_queue_series=3, num_samples=4)
    batcher.start()
    try:
        with pytest.raises(ServiceError) as info:
            asyncio.run(batcher.submit(_job(0, n_series=4), 5.0))
        assert info.value.status == 503 and "Retry-After" in info.value.headers
        assert len(asyncio.run(batcher.submit(_job(1, n_series=3), 5.0))) == 3
    finally:
        batcher.stop()
