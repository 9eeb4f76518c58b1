"""Events and statics over HTTP: `latentcast serve` as a subprocess on 127.0.0.1 with a checkpoint trained
with doses (the session's `pk_checkpoint`); the client's Arrow and JSON requests equal `Model.predict` on
the same long table, GET /models shows the inputs, and malformed inputs are refused per series."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import latentcast
from bench.pkpd import make_pkpd
from bench.server import ServerProcess
from latentcast.arrowio import MEDIA_TYPE, write_stream
from latentcast.client import LatentcastClient
from tests.service.conftest import SERVER_START_S


def _serve(checkpoint: Path, **settings: str) -> Iterator[str]:
    """`latentcast serve` of one checkpoint, 32 samples, a 5 ms batching wait, and LATENTCAST_<settings>."""
    env = {"LATENTCAST_MODELS": json.dumps([str(checkpoint)]), "LATENTCAST_NUM_SAMPLES": "32",
           "LATENTCAST_MAX_WAIT_MS": "5", **{f"LATENTCAST_{k.upper()}": v for k, v in settings.items()}}  # fmt: skip
    with ServerProcess(env, "cpu", timeout=SERVER_START_S) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def server(pk_checkpoint: Path) -> Iterator[str]:
    yield from _serve(pk_checkpoint, max_total_points="5000")


def _plans() -> pd.DataFrame:
    """Ten subjects' first 40 hours, each with a plan after it; two of them the same history under two plans."""
    table = make_pkpd(14, seed=11)
    hist = table[table["time"] < 40.0]
    sampled = hist.loc[hist["conc"].notna(), "id"].unique()[:10]
    hist = hist[hist["id"].isin(sampled)]
    weight = hist.groupby("id")["weight"].first()
    plan = pd.DataFrame({"id": weight.index, "time": 44.0, "dose": 300.0, "weight": weight.to_numpy()})
    twin = hist[hist["id"] == "s0002"].assign(id="s0002-double")
    extra = pd.DataFrame({"id": ["s0002-double"] * 2, "time": [44.0, 52.0], "dose": [300.0, 300.0],
                          "weight": float(weight["s0002"])})  # fmt: skip
    return pd.concat([hist, plan, twin, extra], ignore_index=True)


@pytest.mark.parametrize("transport", ["arrow", "json"])
def test_forecasts_over_http_equal_model_predict(server: str, pk_checkpoint: Path, transport: str) -> None:
    obs, queries = _plans(), [38.0, 45.0, 53.0, 60.0]
    local = latentcast.load(pk_checkpoint, device="cpu", num_samples=32).predict(obs, query_times=queries)
    with LatentcastClient(server) as client:
        remote = client.forecast(obs, queries, transport=transport)  # type: ignore[arg-type]
    assert len(remote) == len(local) == 11 * len(queries)
    for col in ("point", "mean", "q0.1", "q0.5", "q0.9"):
        np.testing.assert_allclose(remote[col].to_numpy(), local[col].to_numpy(), rtol=1e-5, err_msg=col)
    twin = remote.set_index(["id", "time"])["point"]
    assert twin[("s0002-double", 53.0)] > twin[("s0002", 53.0)]  # the second dose, after 52
    assert twin[("s0002-double", 45.0)] == twin[("s0002", 45.0)]


@pytest.fixture(scope="module")
def drip_server(drip_checkpoint: Path) -> Iterator[str]:
    yield from _serve(drip_checkpoint, max_request_seconds="1")


@pytest.mark.parametrize("transport", ["arrow", "json"])
def test_levels_over_http_equal_model_predict(drip_server: str, drip_checkpoint: Path, transport: str) -> None:
    """An infusion rate (a level: null rows leave it unchanged) over both formats, two plans for one history."""
    table = make_pkpd(6, seed=13, infusion=True)
    hist = table[table["time"] < 40.0]
    plan = pd.DataFrame({"id": ["s0001-up", "s0001-up", "s0001-off"], "time": [41.0, 44.0, 41.0],
                         "dose": [None, 200.0, None], "rate": [40.0, None, 0.0]})  # fmt: skip
    twins = [hist[hist["id"] == "s0001"].assign(id=name) for name in ("s0001-up", "s0001-off")]
    obs, queries = pd.concat([hist, *twins, plan], ignore_index=True), [38.0, 41.0, 43.0, 50.0]
    local = latentcast.load(drip_checkpoint, device="cpu", num_samples=32).predict(obs, query_times=queries)
    with LatentcastClient(drip_server) as client:
        remote = client.forecast(obs, queries, transport=transport)  # type: ignore[arg-type]
    assert len(remote) == len(local) == (obs["id"].nunique()) * len(queries)
    for col in ("point", "mean", "q0.1", "q0.9"):
        np.testing.assert_allclose(remote[col].to_numpy(), local[col].to_numpy(), rtol=1e-5, err_msg=col)
    point = remote.set_index(["id", "time"])["point"]
    assert point[("s0001-up", 43.0)] > point[("s0001-off", 43.0)]  # the infusion runs from 41
    assert point[("s0001-up", 41.0)] == point[("s0001-off", 41.0)]
    info = httpx.get(f"{drip_server}/models").json()["models"][0]
    assert [(e["name"], e["kind"]) for e in info["inputs"]["events"]] == [("dose", "event"), ("rate", "level")]
    twice = {"id": "a", "timestamps": [1.0, 5.0], "values": [[2.0], [1.5]], "query_times": [10.0],
             "event_times": [6.0, 6.0], "event_values": [[None, 40.0], [None, 0.0]]}  # fmt: skip
    r = httpx.post(f"{drip_server}/forecast", json={"series": [twice]})
    assert r.status_code == 422 and "given two values (40 and 0) at one time" in r.text, r.text


def test_models_lists_the_inputs(server: str) -> None:
    info = httpx.get(f"{server}/models").json()["models"][0]
    assert info["events"] == ["dose"] and info["static"] == ["weight"]
    assert info["inputs"]["events"][0]["name"] == "dose" and info["inputs"]["static"][0]["std"] > 0


def test_malformed_inputs_are_refused_per_series(server: str) -> None:
    good = {"id": "a", "timestamps": [1.0, 5.0], "values": [[2.0], [1.5]], "query_times": [10.0],
            "event_times": [0.0, 8.0], "event_values": [[200.0], [100.0]], "static": [70.0]}  # fmt: skip
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"event_values": [[200.0]]}, "event_values", "has 1 rows for 2 event times"),
        ({"event_values": [[200.0, 1.0], [100.0, 1.0]]}, "event_values", "takes 1 event kinds"),
        ({"static": [70.0, 1.0]}, "static", "takes 1 static covariates"),
        ({"event_times": ["2026-01-01T00:00:00Z", 8.0]}, "event_times", "same kind as timestamps"),
    ]
    for change, field, words in bad:
        body = {"series": [good, {**good, **change, "id": "b"}], "on_error": "skip"}
        r = httpx.post(f"{server}/forecast", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert [f["id"] for f in out["forecasts"]] == ["a"]
        assert out["errors"][0]["loc"][:3] == ["series", 1, field] and words in out["errors"][0]["msg"], out["errors"]
    r = httpx.post(f"{server}/forecast", json={"series": [{**good, "static": None}]})
    assert r.status_code == 200 and "training mean" in r.json()["forecasts"][0]["warnings"][0]["msg"]
    text = json.dumps({"series": [{**good, "event_values": [[1.0], [2.0]]}]}).replace("[1.0]", "[1e400]")
    r = httpx.post(f"{server}/forecast", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "event_values" in r.json()["errors"][0]["loc"], r.text


GOOD = {"id": "a", "timestamps": [1.0, 5.0], "values": [[2.0], [1.5]], "query_times": [10.0],
        "event_times": [0.0, 8.0], "event_values": [[200.0], [100.0]], "static": [70.0]}  # fmt: skip


def test_inputs_far_out_are_refused_at_once_or_answered_with_a_warning(server: str) -> None:
    for change, field in (({"static": [1e308]}, "static"), ({"event_values": [[1e308], [1.0]]}, "event_values")):
        r = httpx.post(f"{server}/forecast", json={"series": [{**GOOD, **change}]})
        assert r.status_code == 422, r.text  # refused by validation, before any solve (speed: bench.input_refusals)
        assert r.json()["errors"][0]["loc"][2] == field and "within ±3.4e+38" in r.json()["errors"][0]["msg"]
    r = httpx.post(f"{server}/forecast", json={"series": [{**GOOD, "event_values": [[200.0], [1000.0]]}]})
    warned = r.json()["forecasts"][0]["warnings"]
    assert r.status_code == 200 and warned[0]["kind"] == "unusual_value", warned
    assert warned[0]["loc"] == ["series", 0, "event_values", 1] and "more than twice the largest" in warned[0]["msg"]
    r = httpx.post(f"{server}/forecast", json={"series": [{**GOOD, "static": [200.0]}]})
    assert "far outside the training range" in r.json()["forecasts"][0]["warnings"][0]["msg"]
    r = httpx.post(f"{server}/forecast", json={"series": [{**GOOD, "event_values": [[-200.0], [100.0]]}]})
    assert "is negative; training had none" in r.json()["forecasts"][0]["warnings"][0]["msg"]
    # what the model cannot represent is refused, the other series answered (how fast: bench.input_refusals)
    for change, field, words in (
        ({"event_values": [[200.0], [30000.0]]}, "event_values", "over 5 times the largest in training"),
        ({"static": [1e6]}, "static", "over 10 training ranges outside"),
    ):
        body = {"series": [{**GOOD, **change}, {**GOOD, "id": "b"}], "on_error": "skip"}
        r = httpx.post(f"{server}/forecast", json=body)
        assert r.status_code == 200, r.text
        assert [f["id"] for f in r.json()["forecasts"]] == ["b"]
        assert r.json()["errors"][0]["loc"][2] == field and words in r.json()["errors"][0]["msg"], r.text


def test_events_count_toward_the_points_limit(server: str) -> None:
    many = {**GOOD, "event_times": [0.5 * k for k in range(5000)], "event_values": [[10.0]] * 5000}
    r = httpx.post(f"{server}/forecast", json={"series": [many]})
    assert r.status_code == 413 and "(+ events)" in r.json()["detail"], r.text


@pytest.mark.parametrize("column", [pa.array([["70"]]), pa.array([[[70.0]]]), pa.array([[True]])])
def test_an_arrow_static_column_of_anything_but_numbers_is_a_422(server: str, column: pa.Array) -> None:
    table = pa.table(
        {"id": ["a"], "timestamps": [[1.0, 5.0]], "values": [[[2.0], [1.5]]], "query_times": [[10.0]],
         "event_times": [[0.0]], "event_values": [[[200.0]]], "static": column}
    )  # fmt: skip
    r = httpx.post(f"{server}/forecast", content=write_stream(table), headers={"content-type": MEDIA_TYPE})
    assert r.status_code == 422 and "static must be numbers" in r.text, r.text


def test_events_count_in_the_cost_so_a_request_heavy_with_them_is_refused_before_it_runs(drip_server: str) -> None:
    """Each event's compartments are summed at every observation and query time: 20 series of 9,000 rate
    changes and 1,000 query times take seconds, which the cost model once did not see."""
    queries = [6.0 + 0.05 * k for k in range(1000)]
    times, values = [-10.0 + 0.001 * k for k in range(9000)], [[None, float(k % 2) * 40.0] for k in range(9000)]
    heavy = [
        {"id": f"h{i}", "timestamps": [1.0, 5.0], "values": [[2.0], [1.5]], "query_times": queries,
         "event_times": times, "event_values": values}
        for i in range(20)
    ]  # fmt: skip
    r = httpx.post(f"{drip_server}/forecast", json={"series": heavy}, timeout=60.0)
    assert r.status_code == 413 and "LATENTCAST_MAX_REQUEST_SECONDS" in r.text, r.text[:500]  # admission, not 504
