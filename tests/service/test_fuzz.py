"""A short schemathesis run in the suite (the long one: `python -m bench.fuzz --examples 1000`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.fuzz import fuzz
from bench.server import ServerProcess
from tests.service.conftest import SERVER_START_S


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerProcess({"LATENTCAST_NUM_SAMPLES": "8"}, "cpu", timeout=SERVER_START_S) as srv:
        yield srv.url


def test_generated_requests_get_no_5xx_and_answers_that_fit_the_schema(url: str) -> None:
    r = fuzz(url, examples=40, seed=7)
    assert r["exit_code"] == 0, r["output"]
    assert r["server_errors"] == 0
    forecast = r["operations"]["POST /forecast"]
    assert forecast["cases"] >= 40 and "200" in forecast["statuses"] and "422" in forecast["statuses"]
