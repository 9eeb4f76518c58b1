"""The scheduler against a default `latentcast serve` on 127.0.0.1: a small request sent while a costly
one is being solved is answered first, a request whose client left is dropped (and counted), and one
that could not finish in its share of the deadline is refused before it queues."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from bench.server import ServerProcess
from tests.service.conftest import SERVER_START_S

SMALL: dict[str, Any] = {
    "model": "pbcseq",
    "series": [
        {
            "id": "small",
            "timestamps": [0.0, 180.0],
            "values": [[1.2, None, 3.4, 210.0, 55.0, 240.0, 10.1], [1.5, 260.0, None, None, 60.0, 230.0, 10.4]],
            "query_times": [400.0],
        }
    ],
}


def costly(n: int = 750, rtol: float = 1e-5) -> dict[str, Any]:
    """`n` spirals series solved to `rtol`: about 2 s of work on this CPU when it is quiet."""
    rng = np.random.default_rng(0)
    series = [
        {
            "id": f"c{i}",
            "timestamps": [0.0, 0.4, 0.9],
            "values": rng.normal(0, 1, (3, 2)).round(3).tolist(),
            "query_times": [3.0, 6.0],
        }
        for i in range(n)
    ]
    return {"model": "spirals", "series": series, "solver": {"rtol": rtol, "atol": rtol / 10}}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # every setting the default but the admission cap and the deadline, raised so that the costly requests
    # here are admitted and answered however loaded the machine is: these tests are about order, not speed
    env = {"LATENTCAST_MAX_REQUEST_SECONDS": "60", "LATENTCAST_REQUEST_TIMEOUT_S": "600"}
    with ServerProcess(env, "cpu", timeout=SERVER_START_S) as srv:
        yield srv.url


def _timed_post(url: str, body: dict[str, Any]) -> tuple[int, float]:
    r = httpx.post(f"{url}/forecast", json=body, timeout=600)
    return r.status_code, time.monotonic()


def test_a_small_request_is_answered_while_a_costly_one_is_solved(url: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        big = pool.submit(_timed_post, url, costly())
        time.sleep(0.3)  # the costly one is queued and being solved
        small = pool.submit(_timed_post, url, SMALL)
        (big_status, big_done), (small_status, small_done) = big.result(), small.result()
    assert big_status == small_status == 200
    assert small_done < big_done  # answered between two of the costly request's slices


def _scheduled(url: str, outcome: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    pattern = rf'latentcast_scheduled_requests_total\{{model="spirals",outcome="{outcome}"\}} ([0-9.e+]+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_the_work_of_a_client_that_left_is_dropped_and_counted(url: str) -> None:
    before = _scheduled(url, "gone")
    body = json.dumps(costly()).encode()
    head = (
        f"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
        s.sendall(head.encode() + body)
        time.sleep(0.5)  # decoded and being solved; then the client leaves
    end = time.monotonic() + 60
    while _scheduled(url, "gone") <= before and time.monotonic() < end:
        time.sleep(0.2)
    metrics = [line for line in httpx.get(f"{url}/metrics").text.splitlines() if "scheduled_requests_total{" in line]
    assert _scheduled(url, "gone") == before + 1, metrics
    assert httpx.post(f"{url}/forecast", json=SMALL, timeout=30).status_code == 200


def test_a_request_over_its_share_of_the_deadline_is_refused_up_front(url: str) -> None:
    r = httpx.post(f"{url}/forecast", json={**costly(10_000, rtol=1e-7), "num_samples": 256}, timeout=60)
    assert r.status_code == 413 and "LATENTCAST_MAX_REQUEST_SECONDS" in r.json()["detail"], r.text
    assert _scheduled(url, "refused") >= 1
