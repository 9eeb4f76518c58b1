"""Service fixtures: real checkpoints on disk (tiny, untrained), apps driven through TestClient."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from latentcast.models import ModelBundle, TimeSpec
from latentcast.models.checkpoint import save_checkpoint
from latentcast.models.config import SolverConfig
from latentcast.models.data import Normalizer
from latentcast.models.latent_ode import LatentODE
from latentcast.service.config import Settings
from latentcast.service.main import create_app
from tests.conftest import tiny_config

# how long a real server may take to be ready: a bound on a hang, not a speed (a shared CI machine may be
# running a training beside the tests)
SERVER_START_S = 600.0


def write_checkpoint(path: Path, name: str, channels: tuple[str, ...], time: TimeSpec, **solver: Any) -> Path:
    cfg = tiny_config(solver=SolverConfig(**{"rtol": 1e-4, "atol": 1e-5, **solver}))
    model = LatentODE(cfg, len(channels)).eval()
    d = len(channels)
    norm = Normalizer(channels, tuple(c.startswith("log") for c in channels), (0.5,) * d, (2.0,) * d)
    bundle = ModelBundle(name, model, norm, time, {"name": name, "max_span": 3.0}, {"val_nmse": 0.5})
    return save_checkpoint(path, bundle)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {
        # model time in years, numeric times in days (like pbcseq)
        "labs": write_checkpoint(root / "labs.pt", "labs", ("a", "logb", "c"), TimeSpec("day", 1 / 365.25)),
        "toy": write_checkpoint(root / "toy.pt", "toy", ("x", "y"), TimeSpec("unitless", 1.0)),
        # fixed steps of 0.02 and at most 5 of them: queries past t = 0.1 fail
        "stiff": write_checkpoint(
            root / "stiff.pt",
            "stiff",
            ("x", "y"),
            TimeSpec("unitless", 1.0),
            method="rk4",
            step_size=0.02,
            max_num_steps=5,
        ),
    }


def settings_for(checkpoints: dict[str, Path], **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "models": list(checkpoints.values()),
        "default_model": "labs",
        "device": "cpu",
        "num_samples": 8,
        "max_wait_ms": 1.0,
        "decode_processes": 0,  # each app would spawn one (seconds); tests/service/test_decoding.py covers them
    }
    base.update(kw)
    return Settings(**base)


def wait_ready(client: TestClient, timeout: float = SERVER_START_S) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready: {client.get('/readyz').text}")


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def client(checkpoints: dict[str, Path]) -> Iterator[TestClient]:
    with running(settings_for(checkpoints)) as c:
        yield c


def labs_series(sid: str = "p1", n: int = 4, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    days = np.cumsum(rng.integers(20, 200, n)).tolist()
    values: list[list[float | None]] = [[float(v) for v in rng.uniform(1, 3, 3)] for _ in range(n)]
    values[0][1] = None
    return {
        "id": sid,
        "timestamps": [float(d) for d in days],
        "values": values,
        "query_times": [days[-1] + 180.0, days[0] - 30.0, float(days[1])],
    }
