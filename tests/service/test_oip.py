"""The Open Inference Protocol v2 beside the native API: `latentcast serve` as a subprocess on 127.0.0.1
with the embedded models and an API key, Triton's own HTTP client (`tritonclient.http`), and every
answer compared with `POST /forecast` for the same series."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from bench.server import ServerProcess
from latentcast.models.training.datasets.pbcseq import CHANNELS, read_pbcseq
from tests.service.conftest import SERVER_START_S

httpclient = pytest.importorskip("tritonclient.http", reason="the test extra's tritonclient[http]")
KEY = "oip-test-key-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {"LATENTCAST_NUM_SAMPLES": "32", "LATENTCAST_MAX_WAIT_MS": "5", "LATENTCAST_API_KEY": KEY}
    with ServerProcess(env, "cpu", timeout=SERVER_START_S) as srv:
        yield srv.url


def _patients(n: int) -> list[dict[str, Any]]:
    """Real pbcseq patients, uneven visit counts, missing labs; the first has no value at all."""
    frame = read_pbcseq()
    out = []
    for k, (pid, g) in enumerate(list(frame.groupby("id"))[:n]):
        days = g["time"].to_numpy(dtype=float)
        vals = g[list(CHANNELS)].to_numpy(dtype=float)
        if k == 0:
            vals[:] = np.nan
        out.append({"id": f"p{pid}", "days": days, "values": vals, "query": [days[-1] + 365.0, days[0] + 10.0]})
    return out


def _native(p: dict[str, Any]) -> dict[str, Any]:
    vals = [[None if np.isnan(v) else float(v) for v in row] for row in p["values"]]
    return {"id": p["id"], "timestamps": p["days"].tolist(), "values": vals, "query_times": p["query"]}


def _inputs(patients: list[dict[str, Any]]) -> list[Any]:
    """The OIP tensors, built with Triton's client as a KServe or Triton user would."""
    ids = np.array([p["id"] for p in patients], dtype=object)
    times = np.concatenate([p["days"] for p in patients])
    values = np.concatenate([p["values"] for p in patients])
    mask = ~np.isnan(values)
    arrays = {
        "series_id": (ids, "BYTES"),
        "obs_count": (np.array([len(p["days"]) for p in patients], dtype=np.int64), "INT64"),
        "obs_time": (times, "FP64"),
        "obs_value": (np.nan_to_num(values), "FP64"),
        "obs_mask": (mask, "BOOL"),
        "query_count": (np.array([len(p["query"]) for p in patients], dtype=np.int64), "INT64"),
        "query_time": (np.concatenate([p["query"] for p in patients]).astype(np.float64), "FP64"),
    }
    out = []
    for name, (array, datatype) in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        out.append(tensor)
    return out


def test_triton_client_gets_the_same_forecasts_as_the_native_api(server: str) -> None:
    host = server.removeprefix("http://")
    headers = {"X-API-Key": KEY}
    client = httpclient.InferenceServerClient(host)
    assert client.is_server_live() and client.is_server_ready(headers=headers)
    assert client.is_model_ready("pbcseq", headers=headers)
    meta = client.get_model_metadata("pbcseq", headers=headers)
    assert [t["name"] for t in meta["inputs"]][:3] == ["series_id", "obs_count", "obs_time"]
    assert meta["inputs"][3] == {"name": "obs_value", "datatype": "FP64", "shape": [-1, len(CHANNELS)]}

    patients = _patients(12)
    params = {"quantiles": "0.1,0.5,0.9", "on_error": "skip"}
    result = client.infer("pbcseq", _inputs(patients), request_id="r-1", parameters=params, headers=headers)
    answer = result.get_response()
    assert answer["id"] == "r-1" and answer["model_name"] == "pbcseq"
    native = httpx.post(
        f"{server}/forecast",
        json={"series": [_native(p) for p in patients], "quantiles": [0.1, 0.5, 0.9], "on_error": "skip"},
        headers=headers,
        timeout=60,
    ).json()
    ids = result.as_numpy("series_id").astype(str).tolist()
    assert ids == [f["id"] for f in native["forecasts"]] == [p["id"] for p in patients[1:]]
    assert [e["series_id"] for e in json.loads(answer["parameters"]["errors"])] == [patients[0]["id"]]
    mean, quantiles = result.as_numpy("mean"), result.as_numpy("quantiles")
    assert quantiles.shape == (3, 2 * 11, len(CHANNELS))
    row = 0
    for f in native["forecasts"]:
        for j in range(len(f["query_times"])):
            # float32 solves; the two requests may run on 1 or 2 threads (the CPU's thread choice): ~10 ulps
            np.testing.assert_allclose(mean[row], f["mean"][j], rtol=1e-5)
            np.testing.assert_allclose(quantiles[2, row], f["quantiles"]["0.9"][j], rtol=1e-5)
            row += 1
    assert row == len(mean)


def test_errors_are_oip_shaped_and_the_key_is_required(server: str) -> None:
    bad = httpx.post(f"{server}/v2/models/pbcseq/infer", json={"inputs": []}, timeout=30)
    assert bad.status_code == 401 and "API key" in bad.json()["error"]
    headers = {"X-API-Key": KEY}
    missing = httpx.post(f"{server}/v2/models/nope/infer", json={"inputs": [{}]}, headers=headers, timeout=30)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    body = {"inputs": [{"name": "series_id", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
    short = httpx.post(f"{server}/v2/models/pbcseq/infer", json=body, headers=headers, timeout=30)
    assert short.status_code == 400 and "missing tensor" in short.json()["error"]
    unknown = httpx.get(f"{server}/v2/models/nope", headers=headers, timeout=30)
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    assert httpx.get(f"{server}/v2", timeout=30).json()["name"] == "latentcast"
