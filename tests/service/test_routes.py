"""Every endpoint and every error through FastAPI's TestClient (lifespan included)."""

from __future__ import annotations

import gc
import json
import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import SERVER_START_S, labs_series, running, settings_for


def _post(client: TestClient, body: dict[str, Any] | bytes, **headers: str) -> Any:
    if isinstance(body, bytes):
        return client.post("/forecast", content=body, headers={"content-type": "application/json", **headers})
    return client.post("/forecast", json=body, headers=headers)


def test_forecast_shapes_order_and_quantiles(client: TestClient) -> None:
    series = [labs_series("p1"), labs_series("p2", n=2, seed=1)]
    body: dict[str, Any] = {
        "series": series,
        "quantiles": [0.9, 0.1, 0.5],
        "num_samples": 3,
    }
    r = _post(client, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"]["name"] == "labs" and len(out["model"]["version"]) == 12
    assert out["channels"] == ["a", "logb", "c"]
    for f, s in zip(out["forecasts"], series, strict=True):
        assert f["id"] == s["id"] and f["query_times"] == s["query_times"]
        assert len(f["mean"]) == 3 and all(len(row) == 3 for row in f["mean"])
        assert list(f["quantiles"]) == ["0.9", "0.1", "0.5"]
        for k in range(3):
            for j in range(3):
                assert f["quantiles"]["0.1"][k][j] <= f["quantiles"]["0.5"][k][j] <= f["quantiles"]["0.9"][k][j]
        assert len(f["samples"]) == 3 and len(f["samples"][0]) == 3
    assert r.headers["x-request-id"]


def test_default_model_and_samples_omitted(client: TestClient) -> None:
    r = _post(client, {"series": [labs_series()]})
    assert r.status_code == 200
    f = r.json()["forecasts"][0]
    assert "samples" not in f and list(f["quantiles"]) == ["0.1", "0.5", "0.9"]


@pytest.mark.parametrize(
    ("mutate", "status", "match"),
    [
        (lambda b: b.update(model="nope"), 404, "unknown model 'nope'"),
        (lambda b: b.update(series=[]), 422, "series: must be a non-empty list of series"),
        (lambda b: b["series"].append(dict(b["series"][0])), 422, "duplicate id"),
        (lambda b: b["series"][0].update(timestamps=[10.0, 5.0, 20.0, 30.0]), 422, "strictly increasing"),
        (lambda b: b["series"][0].update(timestamps=[10.0, "2026-01-01", 20.0, 30.0]), 422, "mixes numbers"),
        (
            lambda b: b["series"][0].update(timestamps=[1.0, 2.0, True, 4.0]),
            422,
            r"timestamps\[2\]: must be a number or an ISO-8601 date-time string",
        ),
        (lambda b: b["series"][0]["values"].__setitem__(1, [1.0, 2.0]), 422, r"values\[1\]: row has 2 values"),
        (lambda b: b["series"][0].update(values=[[None] * 3] * 4), 422, "no observed value"),
        (lambda b: b["series"][0].update(query_times=[]), 422, "query_times: List should have at least 1 item"),
        (
            lambda b: b.update(quantiles=[1e-300]),
            422,
            r"quantiles\[0\]: 1e-300 is not in \[0.0001, 0.9999\] \(quantiles are solved",
        ),
        (lambda b: b["series"][0]["values"][0].__setitem__(0, "1.0"), 422, r"values\[0\]\[0\]: Input should be"),
        (lambda b: b["series"][0].update(extra=1), 422, "extra: Extra inputs are not permitted"),
        (lambda b: b["series"][0].update(query_times=[1e7]), 422, "LATENTCAST_MAX_HORIZON_FACTOR"),
    ],
)
def test_bad_input_is_a_precise_4xx_naming_the_series(client: TestClient, mutate, status: int, match: str) -> None:
    body: dict[str, Any] = {"series": [labs_series("p-7")]}
    mutate(body)
    r = _post(client, body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert re.search(match, detail), detail
    if "series[0]" in detail:  # a field of a series: its id is named too
        assert "series 'p-7': series[0]" in detail
        assert r.json()["errors"][0]["series_id"] == "p-7"


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"series": [', b"[1, 2"])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    r = _post(client, raw)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("malformed JSON")


@pytest.mark.parametrize(("field", "literal"), [("values", "NaN"), ("values", "Infinity"), ("timestamps", "NaN")])
def test_non_finite_numbers_are_refused(client: TestClient, field: str, literal: str) -> None:
    s = labs_series("nf")
    s[field] = [float(v) if field == "timestamps" else v for v in s[field]]
    raw = json.dumps({"series": [s]})
    head, tail = raw.split(f'"{field}": [', 1)
    raw = f'{head}"{field}": [' + (f"[{literal}, " if field == "values" else f"{literal}, ") + tail[1:]
    r = _post(client, raw.encode())
    assert r.status_code == 422, r.text
    assert "finite number" in r.json()["detail"] and r.json()["errors"][0]["series_id"] == "nf"


def test_numeric_times_for_a_unitless_model_and_date_times_refused(client: TestClient) -> None:
    s = {"id": "a", "timestamps": [0.0, 0.5], "values": [[1.0, 2.0], [1.5, None]], "query_times": [1.0]}
    assert _post(client, {"model": "toy", "series": [s]}).status_code == 200
    s.update(timestamps=["2026-01-01", "2026-01-02"], query_times=["2026-01-03"])
    r = _post(client, {"model": "toy", "series": [s]})
    assert r.status_code == 422 and "numeric times" in r.json()["detail"]


def test_solver_failure_is_422_naming_the_series(client: TestClient) -> None:
    ok = {"id": "near", "timestamps": [0.0, 0.1], "values": [[1.0, 2.0], [1.1, 2.1]], "query_times": [0.05]}
    far = {"id": "far", "timestamps": [0.0, 0.1], "values": [[1.0, 2.0], [1.1, 2.1]], "query_times": [5.0]}
    r = _post(client, {"model": "stiff", "series": [ok, far]})
    assert r.status_code == 422, r.text
    err = r.json()
    assert "'far'" in err["detail"] and "step limit" in err["detail"]
    assert [e["series_id"] for e in err["errors"]] == ["far"]


def test_models_health_ready_metrics(client: TestClient) -> None:
    models = client.get("/models").json()["models"]
    assert {m["name"] for m in models} == {"labs", "toy", "stiff"}
    labs = next(m for m in models if m["name"] == "labs")
    assert labs["default"] and labs["channels"] == ["a", "logb", "c"] and labs["log_channels"] == ["logb"]
    assert labs["time_unit"] == "day" and abs(labs["max_horizon"] - 2 * 3.0 * 365.25) < 1e-6
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    r = _post(client, {"series": [labs_series(), labs_series("p2")]})
    timing = dict(re.findall(r"(\w+);(?:dur|desc)=\"?([\d.]+)", r.headers["server-timing"]))
    assert set(timing) == {"read", "queue", "solve", "handback", "render", "batch", "captures"}
    assert float(timing["solve"]) > 0 and timing["batch"] == "2" and timing["captures"] == "0"
    gc.collect()
    text = client.get("/metrics").text
    assert 'latentcast_gc_pause_seconds_count{generation="2"}' in text
    for name in (
        "latentcast_queue_seconds_bucket",
        "latentcast_graph_captures_total",
        "latentcast_requests_total",
        "latentcast_request_seconds_bucket",
        "latentcast_series_per_request",
        "latentcast_batch_series",
        "latentcast_solver_nfe_total",
        "latentcast_inflight_requests",
    ):
        assert name in text
    assert 'latentcast_requests_total{path="/forecast",status="200"}' in text
    doc = client.get("/openapi.json").json()
    assert "ForecastRequest" in doc["components"]["schemas"]
    assert (
        doc["paths"]["/forecast"]["post"]["requestBody"]["content"]["application/json"]["example"]["model"] == "pbcseq"
    )
    assert "application/vnd.apache.arrow.stream" in doc["paths"]["/forecast"]["post"]["requestBody"]["content"]


def test_body_over_the_limit_is_413(checkpoints) -> None:
    with running(settings_for(checkpoints, max_body_bytes=2048)) as c:
        body = {"series": [labs_series(f"s{i}") for i in range(20)]}
        r = _post(c, body)
        assert r.status_code == 413 and "LATENTCAST_MAX_BODY_BYTES" in r.json()["detail"]


def test_api_key(checkpoints) -> None:
    key = "k" * 24
    with running(settings_for(checkpoints, api_key=key)) as c:
        body = {"series": [labs_series()]}
        assert _post(c, body).status_code == 401
        assert _post(c, body, **{"x-api-key": "k" * 23 + "x"}).status_code == 401
        assert _post(c, body, **{"x-api-key": key}).status_code == 200
        assert _post(c, body, authorization=f"Bearer {key}").status_code == 200
        assert c.get("/models").status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        for path in ("/metrics", "/docs", "/openapi.json"):  # protected too, unless opened
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"x-api-key": key}).status_code == 200, path
    with running(settings_for(checkpoints, api_key=key, open_docs=True, open_metrics=True)) as c:
        assert c.get("/metrics").status_code == 200 and c.get("/openapi.json").status_code == 200
        assert c.get("/models").status_code == 401


def test_a_request_larger_than_the_queue_is_413_not_503(checkpoints) -> None:
    """Retrying cannot help a request the queue can never hold (a full queue is 503: test_batching)."""
    with running(settings_for(checkpoints, max_queue_series=2)) as c:
        r = _post(c, {"series": [labs_series(f"s{i}") for i in range(3)]})
        assert r.status_code == 413 and "retry-after" not in r.headers
        assert "LATENTCAST_MAX_QUEUE_SERIES" in r.json()["detail"]


def test_deadline_is_504(checkpoints) -> None:
    with running(settings_for(checkpoints, request_timeout_s=1e-4, max_wait_ms=50)) as c:
        r = _post(c, {"series": [labs_series()]})
        assert r.status_code == 504 and "LATENTCAST_REQUEST_TIMEOUT_S" in r.json()["detail"]


def test_not_ready_until_models_load(checkpoints, tmp_path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    from latentcast.service.main import create_app

    with TestClient(create_app(settings_for({"x": bad}, default_model=None))) as c:
        end = time.monotonic() + SERVER_START_S
        while (r := c.get("/readyz")).json()["status"] == "loading" and time.monotonic() < end:
            time.sleep(0.02)
        assert r.status_code == 503 and r.json()["status"] == "failed" and "broken.pt" in r.json()["detail"]
        r = _post(c, {"series": [labs_series()]})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert c.get("/healthz").status_code == 200


def test_unparsable_date_time_names_the_element(client: TestClient) -> None:
    s = labs_series("d1")
    s.update(timestamps=["2026-01-01", "2026-13-45", "2026-03-01", "2026-04-01"], query_times=["2026-05-01"])
    r = _post(client, {"series": [s]})
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "series 'd1': series[0].timestamps[1]: '2026-13-45' is not a calendar date-time (month 13)"
    )


@pytest.mark.parametrize(
    ("limits", "body", "setting"),
    [
        ({"max_series": 2}, {"series": [labs_series(f"s{i}") for i in range(3)]}, "LATENTCAST_MAX_SERIES"),
        ({"max_points": 3}, {"series": [labs_series("s", n=4)]}, "LATENTCAST_MAX_POINTS"),
        ({"max_query_times": 2}, {"series": [labs_series("s")]}, "LATENTCAST_MAX_QUERY_TIMES"),
        ({"max_total_points": 10}, {"series": [labs_series("a"), labs_series("b")]}, "LATENTCAST_MAX_TOTAL_POINTS"),
    ],
)
def test_too_many_series_points_or_query_times_is_413(checkpoints, limits, body, setting: str) -> None:
    with running(settings_for(checkpoints, **limits)) as c:
        r = _post(c, body)
        assert r.status_code == 413, r.text
        assert setting in r.json()["detail"]


def test_too_many_samples_is_422(checkpoints) -> None:
    with running(settings_for(checkpoints, max_num_samples=4)) as c:
        r = _post(c, {"series": [labs_series()], "num_samples": 5})
        assert r.status_code == 422 and "LATENTCAST_MAX_NUM_SAMPLES" in r.json()["detail"]


def test_the_answer_size_is_bounded_before_any_work(checkpoints) -> None:
    series = [dict(labs_series(f"s{i}"), query_times=[float(d) for d in range(100, 400)]) for i in range(30)]
    with running(settings_for(checkpoints, max_response_values=100_000)) as c:
        r = _post(c, {"series": series, "num_samples": 256})  # 30 × 300 × 3 × (1 + 3 + 256) numbers
        assert r.status_code == 413 and "LATENTCAST_MAX_RESPONSE_VALUES" in r.json()["detail"]
        assert "7020000 numbers" in r.json()["detail"]
        r = _post(c, {"series": series[:1], "quantiles": [i / 100 for i in range(1, 40)]})
        assert r.status_code == 422 and "LATENTCAST_MAX_QUANTILES" in r.json()["detail"]
        assert _post(c, {"series": series[:2]}).status_code == 200


def test_sampled_trajectories_count_in_the_answer_check() -> None:
    """A forecast whose samples, not its mean, lie far out is reported; LATENTCAST_WARNINGS_AS_ERRORS
    refuses it. (The embedded spirals model, 25 training scales as the threshold.)"""
    from latentcast.models.checkpoint import EMBEDDED_DIR
    from latentcast.service.config import Settings

    x = 100.0  # far in its inputs (answered with a warning), and so in its answers 14 units ahead
    series = {"id": "s", "timestamps": [0.0, 0.5], "values": [[x, x / 2], [x * 1.1, x / 2.2]], "query_times": [14.0]}
    base: dict[str, Any] = {"models": [EMBEDDED_DIR / "spirals.pt"], "device": "cpu", "unusual_output_scales": 25.0}
    with running(Settings(**base)) as client:
        plain = client.post("/forecast", json={"series": [series]}).json()["forecasts"][0]
        sampled = client.post("/forecast", json={"series": [series], "num_samples": 256}).json()["forecasts"][0]
    kinds = lambda f: [w["kind"] for w in f["warnings"]]  # noqa: E731
    assert kinds(plain) == ["unusual_value"]
    assert kinds(sampled) == ["unusual_value", "unusual_forecast"]
    assert "LATENTCAST_UNUSUAL_OUTPUT_SCALES" in sampled["warnings"][1]["msg"]
    with running(Settings(**base, warnings_as_errors=True)) as client:
        r = client.post("/forecast", json={"series": [series], "num_samples": 256})
        assert r.status_code == 422 and "LATENTCAST_WARNINGS_AS_ERRORS" in r.json()["detail"]
        r = client.post("/forecast", json={"series": [series], "num_samples": 256, "on_error": "skip"})
        assert r.status_code == 200 and r.json()["forecasts"] == []


def test_renamed_settings_fail_at_start_and_say_the_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from latentcast.service.config import Settings

    monkeypatch.setenv("LATENTCAST_MAX_VALUE_SIGMAS", "1e9")
    with pytest.raises(ValidationError, match="LATENTCAST_MAX_VALUE_SIGMAS is now LATENTCAST_UNUSUAL_VALUE_SCALES"):
        Settings(device="cpu")


def test_health_checks_are_answered_while_a_large_body_is_decoded(checkpoints, monkeypatch) -> None:
    """The decode of a body over LATENTCAST_OFFLOAD_BYTES is held until /healthz has been answered: on
    the event loop it could not be (the test would time out); on a worker thread it is."""
    import threading

    from latentcast.service.formats import json as json_format

    entered, release = threading.Event(), threading.Event()
    decode = json_format.decode

    def held(*args: Any) -> Any:
        entered.set()
        assert release.wait(30), "the test never released the decode"
        return decode(*args)

    monkeypatch.setattr(json_format, "decode", held)
    body = json.dumps({"series": [labs_series(f"s{i}") for i in range(400)]}).encode()
    with running(settings_for(checkpoints, offload_bytes=1024)) as client:
        assert len(body) > 1024
        result: dict[str, Any] = {}
        big = threading.Thread(
            target=lambda: result.update(
                r=client.post("/forecast", content=body, headers={"content-type": "application/json"})
            )
        )
        big.start()
        assert entered.wait(30)
        assert client.get("/healthz").status_code == 200  # answered while the decode is held
        release.set()
        big.join(60)
    assert result["r"].status_code == 200 and len(result["r"].json()["forecasts"]) == 400
