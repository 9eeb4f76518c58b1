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


def _body(counts: list[int], n_obs: int, *, nested: Any = None, **params: Any) -> dict[str, Any]:
    d = len(CHANNELS)
    values: Any = nested if nested is not None else [1.0] * (n_obs * d)
    tensors = [
        ("series_id", "BYTES", [len(counts)], [f"s{i}" for i in range(len(counts))]),
        ("obs_count", "INT64", [len(counts)], counts),
        ("obs_time", "FP64", [n_obs], [float(10 * i) for i in range(n_obs)]),
        ("obs_value", "FP64", [n_obs, d], values),
        ("query_count", "INT64", [len(counts)], [1] * len(counts)),
        ("query_time", "FP64", [len(counts)], [1000.0] * len(counts)),
    ]
    body: dict[str, Any] = {"inputs": [{"name": n, "datatype": t, "shape": s, "data": x} for n, t, s, x in tensors]}
    return body | ({"parameters": params} if params else {})


def test_what_the_protocol_cannot_carry_is_a_400_that_says_what_to_change(server: str) -> None:
    url, headers = f"{server}/v2/models/pbcseq/infer", {"X-API-Key": KEY}

    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(url, json=body, headers=headers, timeout=30)

    empty = post(_body([], 0))
    assert empty.status_code == 400 and "series_id" in empty.json()["error"]
    wrap = post(_body([2**62] * 4, 0))  # counts whose int64 sum wraps to 0
    assert wrap.status_code == 400 and "each in [0, 0]" in wrap.json()["error"]
    rows = [[1.0] * 6, [1.0] * 8, [1.0] * 7]  # 21 values for [3, 7], in rows of the wrong width
    shifted = post(_body([3], 3, nested=rows))
    assert shifted.status_code == 400 and "3 rows of 7 values" in shifted.json()["error"]
    assert post(_body([3], 3, nested=[[1.0] * 7] * 3)).status_code == 200  # nested rows that fit
    assert "on_error" in post(_body([3], 3, on_error="SKIP")).json()["error"]
    assert "num_samples" in post(_body([3], 3, num_samples=256)).json()["error"]  # no samples in an answer
    long = post(_body([3], 3, **{"x" * 100_000: 1}))
    assert long.status_code == 400 and len(long.content) < 1000  # an error never echoes a whole body
    bad = _body([1, 1], 2)
    bad["inputs"][3]["data"] = [-1.0] * 14  # a negative bilirubin in both series: both refused, both named
    refused = post(bad)
    assert refused.status_code == 422 and "'s0'" in refused.json()["error"] and "'s1'" in refused.json()["error"]
    version = httpx.get(f"{server}/v2/models/pbcseq", headers=headers, timeout=30).json()["versions"][0]
    again = httpx.post(f"{server}/v2/models/pbcseq/versions/{version}/infer", json=_body([3], 3), headers=headers)
    assert again.status_code == 200 and again.json()["model_version"] == version
    other = httpx.post(f"{server}/v2/models/pbcseq/versions/0/infer", json=_body([3], 3), headers=headers)
    assert other.status_code == 404 and version in other.json()["error"]
