"""Accuracy on demand: a request sets its solver's tolerance, within the server's bounds, and is told
what it got and what it cost."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from latentcast import arrowio
from latentcast.models import (
    Forecaster,
    ModelBundle,
    SolverConfig,
    TimeSpec,
)
from latentcast.models.checkpoint import load_checkpoint, save_checkpoint
from latentcast.models.data import Normalizer
from latentcast.models.latent_ode import LatentODE
from latentcast.models.packed import PackedSeries
from latentcast.service.batching import Batcher
from latentcast.service.config import Settings
from latentcast.service.formats import json as json_format
from latentcast.service.registry import load_models
from tests.conftest import tiny_config
from tests.service.conftest import labs_series, running, settings_for
from tests.service.test_batching import _job


def _post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/forecast", json={"series": [labs_series("p1", n=6)], **body})


def _lively_checkpoint(path: Path) -> Path:
    """A tiny model whose dynamics are scaled ×2: fast enough that the tolerance shows in float32."""
    torch.manual_seed(0)
    model = LatentODE(tiny_config(solver=SolverConfig(rtol=1e-4, atol=1e-5)), 2).eval()
    with torch.no_grad():
        for p in model.dynamics.parameters():
            p.mul_(2.0)
    norm = Normalizer(("x", "y"), (False, False), (0.5, 0.5), (2.0, 2.0))
    meta = {"name": "lively", "max_span": 3.0}
    return save_checkpoint(path, ModelBundle("lively", model, norm, TimeSpec("unitless", 1.0), meta, {}))


def test_a_tighter_tolerance_costs_more_and_errs_less(tmp_path: Path) -> None:
    """The same request at four tolerances: each answer reports the tolerance it was solved at; the
    evaluations it reports rise and its error against a float64 solve at rtol 1e-10 falls."""
    path = _lively_checkpoint(tmp_path / "lively.pt")
    series = {
        "id": "a",
        "timestamps": [0.0, 0.4, 1.1, 1.5],
        "values": [[1.0, 2.0], [1.5, None], [0.5, 1.0], [1.0, 1.0]],
        "query_times": [1.7, 2.0, 2.5],
    }
    runs = []
    with running(settings_for({"lively": path}, default_model="lively")) as client:
        for tol in (1e-1, 1e-3, 1e-5, 1e-7):
            r = client.post("/forecast", json={"series": [series], "solver": {"rtol": tol, "atol": tol}})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["solver"]["rtol"] == tol and out["solver"]["atol"] == tol
            runs.append((out["forecasts"][0]["nfe"], np.asarray(out["forecasts"][0]["mean"])))
        state = client.app.state.latentcast  # type: ignore[attr-defined]
        job = json_format.decode(json.dumps({"series": [series]}).encode(), {}, state.lookup, state.settings)
    reference = Forecaster.from_bundle(load_checkpoint(path), num_samples=8, dtype=torch.float64)
    exact = reference.predict_packed(job.packed, solver=SolverConfig(rtol=1e-10, atol=1e-12, max_num_steps=100_000))
    errors = [float(np.abs(mean - exact.mean).max()) for _, mean in runs]
    nfes = [nfe for nfe, _ in runs]
    assert nfes == sorted(nfes) and len(set(nfes)) == len(nfes), nfes
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == len(errors), errors
    assert errors[-1] < 1e-4


def test_named_levels_and_what_the_answer_reports(client: TestClient) -> None:
    fast = _post(client, {"solver": {"level": "fast"}}).json()
    default = _post(client, {}).json()
    precise = _post(client, {"solver": {"level": "precise"}}).json()
    assert fast["solver"]["rtol"] == 1e-2 and precise["solver"]["rtol"] == 1e-6
    assert default["solver"]["rtol"] == 1e-4  # the test model's own setting
    assert fast["forecasts"][0]["nfe"] < default["forecasts"][0]["nfe"] < precise["forecasts"][0]["nfe"]
    arrow = client.post(
        "/forecast?model=labs&solver=precise",
        content=arrowio.encode_series([labs_series("p1", n=6)]),
        headers={"content-type": arrowio.MEDIA_TYPE},
    )
    table = arrowio.read_stream(arrow.content)
    used = json.loads(table.schema.metadata[b"latentcast.solver"])
    assert used["rtol"] == 1e-6 and table.column("nfe")[0].as_py() == pytest.approx(
        precise["forecasts"][0]["nfe"], rel=1e-5
    )


@pytest.mark.parametrize(
    ("solver", "query", "match"),
    [
        ({"rtol": 1e-9}, "", "LATENTCAST_MIN_RTOL"),
        ({"atol": 0.5}, "", "LATENTCAST_MAX_ATOL"),
        ({"level": "exact"}, "", "fast"),
        ({"rtol": 2.0}, "", "less than 1"),
        (None, "?rtol=1e-12", "LATENTCAST_MIN_RTOL"),
        (None, "?solver=exact", "not one of"),
        (None, "?atol=x", "'x' is not a number"),
    ],
)
def test_a_tolerance_out_of_bounds_is_a_422_naming_the_limit(
    client: TestClient, solver, query: str, match: str
) -> None:
    if query:
        body = arrowio.encode_series([labs_series("p1")])
        r = client.post(f"/forecast{query}", content=body, headers={"content-type": arrowio.MEDIA_TYPE})
    else:
        r = _post(client, {"solver": solver})
    assert r.status_code == 422 and match in r.text, r.text


def test_a_fixed_step_model_refuses_a_tolerance(client: TestClient) -> None:
    r = client.post(
        "/forecast",
        json={
            "model": "stiff",
            "series": [{"id": "a", "timestamps": [0.0], "values": [[1.0, 2.0]], "query_times": [0.05]}],
            "solver": {"rtol": 1e-3},
        },
    )
    assert r.status_code == 422 and "fixed steps" in r.json()["detail"]


def test_mixed_tolerances_in_one_queue_each_get_what_they_get_alone(checkpoints) -> None:
    """Requests asking for different tolerances are solved in separate batches: each answer equals
    that request solved alone, at its own tolerance."""
    settings = Settings(models=[checkpoints["toy"]], device="cpu", num_samples=4)
    models = load_models(settings, torch.device("cpu"))
    batcher = Batcher(models, enabled=True, max_batch_series=64, max_wait_ms=50, max_queue_series=100, num_samples=4)
    solvers = [SolverConfig(rtol=r, atol=r / 10) for r in (1e-2, 1e-6, 1e-2, 1e-4)]
    jobs = [dataclasses.replace(_job(i), solver=s) for i, s in enumerate(solvers)]
    batcher.start()
    try:

        async def run() -> list[Any]:
            return list(await asyncio.gather(*(batcher.submit(j, time.monotonic() + 30) for j in jobs)))

        results = asyncio.run(run())
    finally:
        batcher.stop()
    fc = models["toy"].forecaster
    for job, res in zip(jobs, results, strict=True):
        alone = fc.predict_packed(job.packed, levels=job.levels, solver=job.solver)
        np.testing.assert_allclose(res.mean, alone.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.nfe, alone.nfe)
    assert results[0].nfe.mean() < results[1].nfe.mean()
    assert isinstance(jobs[0].packed, PackedSeries)
