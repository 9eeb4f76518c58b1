"""Bodies decoded in a worker process answer exactly as those decoded here, errors included; a worker
that dies costs its own request a 503 and nothing else."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from latentcast.service.decoding import DecodePool
from latentcast.service.errors import ServiceError
from latentcast.service.main import create_app
from tests.service.conftest import labs_series, running, settings_for, wait_ready

BODIES: list[tuple[str, dict[str, Any]]] = [
    ("good", {"series": [labs_series(f"s{i}", seed=i) for i in range(5)], "quantiles": [0.1, 0.9]}),
    ("refused series", {"series": [labs_series("a"), {**labs_series("b"), "values": [[1.0]]}]}),
    ("unknown model", {"model": "nope", "series": [labs_series()]}),
    ("bad option", {"series": [labs_series()], "num_samples": -1}),
]


def _post(client: TestClient, body: bytes, **headers: str) -> tuple[int, Any]:
    r = client.post("/forecast", content=body, headers={"content-type": "application/json", **headers})
    return r.status_code, r.json()


def _decodes(client: TestClient) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("latentcast_decoded_bodies_total{"):
            where = line.split('where="')[1].split('"')[0]
            out[where] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.fixture(scope="module")
def pooled(checkpoints: dict[str, Path]) -> Iterator[TestClient]:
    """Every body over 0 bytes goes to the one decode process."""
    settings = settings_for(checkpoints, decode_processes=1, offload_bytes=0)
    with running(settings) as client:
        yield client


def test_a_service_error_survives_the_trip_between_processes() -> None:
    err = ServiceError(413, "too big", [{"loc": ["series"], "msg": "m", "series_id": None}], {"Retry-After": "2"})
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.detail, back.errors, back.headers) == (err.status, err.detail, err.errors, err.headers)


def test_process_decoding_answers_as_decoding_here(pooled: TestClient, checkpoints: dict[str, Path]) -> None:
    bodies = [json.dumps(b).encode() for _, b in BODIES]
    before = _decodes(pooled)
    there = [_post(pooled, b) for b in bodies]
    zipped = _post(pooled, gzip.compress(bodies[0]), **{"content-encoding": "gzip"})
    assert _decodes(pooled)["process"] - before.get("process", 0) == len(bodies) + 1
    with running(settings_for(checkpoints)) as client:
        here = [_post(client, b) for b in bodies]
        assert _decodes(client) == {"inline": len(bodies)}
        small = _post(client, gzip.compress(bodies[0]), **{"content-encoding": "gzip"})
        assert small == here[0] and _decodes(client) == {"inline": len(bodies) + 1}  # a small gzip body: inline
    assert [s for s, _ in there] == [200, 422, 404, 422]
    assert there == here
    assert zipped == here[0]


def test_a_dead_decode_process_fails_its_request_alone(pooled: TestClient) -> None:
    body = json.dumps(BODIES[0][1]).encode()
    state = pooled.app.state.latentcast  # type: ignore[attr-defined]
    pool = state.decoder._pool
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    status, answer = _post(pooled, body)
    assert status == 503 and "stopped" in answer["detail"]
    assert state.decoder._pool is not pool  # replaced
    status, _ = _post(pooled, body)
    assert status == 200
    assert pooled.get("/healthz").status_code == 200


def test_the_pool_starts_with_the_models_and_stops_with_the_app(checkpoints: dict[str, Path]) -> None:
    app = create_app(settings_for(checkpoints, decode_processes=1))
    with TestClient(app) as client:
        wait_ready(client)
        pool: DecodePool = app.state.latentcast.decoder
        processes = list(pool._pool._processes.values())
        assert len(processes) == 1 and processes[0].is_alive()  # warmed before ready
    assert not processes[0].is_alive()


def test_gzip_members_inflate_in_one_pass_and_their_number_is_capped() -> None:
    """Several members concatenate; a body of many empty members (a stall attack: each member's end used
    to copy the rest of the body) is refused past MAX_MEMBERS, and anything after the stream is a 400."""
    import zlib

    from latentcast.service.decoding import MAX_MEMBERS, inflate
    from latentcast.service.errors import ServiceError

    big = bytes(range(256)) * 2000  # compresses well: one member, one input chunk
    noisy = np.random.default_rng(0).bytes(300_000)  # incompressible: its gzip spans several input chunks
    body = gzip.compress(big) + gzip.compress(b"") + gzip.compress(noisy)
    assert inflate(body, "gzip", 10**7) == big + noisy
    assert inflate(zlib.compress(noisy), "deflate", 10**7) == noisy
    many = gzip.compress(b"") * (MAX_MEMBERS + 1) + gzip.compress(b"{}")
    with pytest.raises(ServiceError, match=f"more than {MAX_MEMBERS} members") as info:
        inflate(many, "gzip", 10**7)
    assert info.value.status == 400
    for bad, limit, status, match in (
        (gzip.compress(noisy)[:-10], 10**7, 400, "ends early"),
        (zlib.compress(b"{}") + b"x", 10**7, 400, "bytes follow"),
        (gzip.compress(b"0" * 5000), 4096, 413, "once decompressed"),
    ):
        with pytest.raises(ServiceError, match=match) as info:
            inflate(bad, "gzip" if bad[:2] == b"\x1f\x8b" else "deflate", limit)
        assert info.value.status == status
