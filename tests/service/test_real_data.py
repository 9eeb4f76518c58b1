"""Real data is not an attack: against a default `latentcast serve` on 127.0.0.1 (the embedded models),
unusual records are answered with warnings, only what the model cannot represent is refused, every
refusal is listed, a request may ask for the others' answers, and each input hole found by a hostile
client is closed, over JSON and Arrow."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.server import ServerProcess
from latentcast.arrowio import MEDIA_TYPE, encode_series, read_stream, write_stream
from tests.service.conftest import SERVER_START_S

GOOD: dict[str, Any] = {
    "id": "good",
    "timestamps": [0.0, 180.0, 370.0],
    "values": [
        [1.2, None, 3.4, 210.0, 55.0, 240.0, 10.1],
        [1.5, 260.0, None, None, 60.0, 230.0, 10.4],
        [1.7, None, 3.3, 250.0, None, 220.0, 10.6],
    ],
    "query_times": [400.0, 730.0],
}
KEY = "k" * 24


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerProcess({}, "cpu", timeout=SERVER_START_S) as srv:  # the defaults: no LATENTCAST_* setting
        yield srv.url


def _series(sid: str, **changes: Any) -> dict[str, Any]:
    return {**GOOD, "id": sid, **changes}


def _row0(**cols: float | None) -> list[list[float | None]]:
    """GOOD's values with some of the first row's channels replaced (by index name c0…c6)."""
    row = list(GOOD["values"][0])
    for k, v in cols.items():
        row[int(k[1:])] = v
    return [row, *GOOD["values"][1:]]


def post(url: str, body: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
    if isinstance(body, dict):
        body = json.dumps({"model": "pbcseq", **body}).encode()
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(f"{url}/forecast", content=body, headers=headers, timeout=60, **kw)


def post_arrow(url: str, body: bytes, query: str = "?model=pbcseq", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/forecast{query}", content=body, headers={"content-type": MEDIA_TYPE, **headers}, timeout=60
    )


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two answers for one series: equal up to float32 rounding (a batch of another size runs other BLAS
    blocks; the model's inputs are identical, tests/models/test_guard.py)."""
    np.testing.assert_allclose(np.asarray(a["mean"], float), np.asarray(b["mean"], float), rtol=1e-5, atol=1e-5)
    for level in b["quantiles"]:
        np.testing.assert_allclose(a["quantiles"][level], b["quantiles"][level], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# unusual is answered, impossible is refused, every refusal listed, partial answers on request


def test_an_unusual_value_is_answered_with_a_warning_on_both_wires(url: str) -> None:
    odd = _series("odd", values=_row0(c2=3.4e6))  # albumin a million times its usual size
    r = post(url, {"series": [odd]})
    assert r.status_code == 200, r.text
    (w,) = r.json()["forecasts"][0]["warnings"]
    assert w["kind"] == "unusual_value" and w["loc"] == ["series", 0, "values", 0]
    assert "standard deviations from the training mean" in w["msg"] and "'albumin' = 3.4e+06" in w["msg"]
    assert np.isfinite(np.asarray(r.json()["forecasts"][0]["mean"], dtype=float)).all()
    a = post_arrow(url, encode_series([odd]))
    assert a.status_code == 200
    meta = read_stream(a.content).schema.metadata
    assert json.loads(meta[b"latentcast.warnings"])[0]["msg"] == w["msg"]
    assert json.loads(meta[b"latentcast.errors"]) == []
    metrics = httpx.get(f"{url}/metrics").text
    assert 'latentcast_warnings_total{kind="unusual_value",model="pbcseq"}' in metrics


def test_what_cannot_be_represented_is_still_a_422(url: str) -> None:
    for values, match in ((_row0(c0=1e39), "beyond float32"), (_row0(c0=-1.0), "values must be > 0")):
        r = post(url, {"series": [_series("bad", values=values)]})
        assert r.status_code == 422 and match in r.json()["detail"], r.text
    nan = json.dumps({"model": "pbcseq", "series": [GOOD]}).replace("1.2, null", "NaN, null", 1).encode()
    r = post(url, nan)
    assert r.status_code == 422 and "finite number" in r.json()["detail"]


def test_a_422_lists_every_refused_series_and_skip_answers_the_rest(url: str) -> None:
    series = [
        _series("a"),
        _series("neg", values=_row0(c0=-1.0)),
        _series("b"),
        _series("far", query_times=[1e7]),
        _series("back", timestamps=[0.0, 180.0, 100.0]),
    ]
    r = post(url, {"series": series})
    assert r.status_code == 422
    body = r.json()
    assert [e["series_id"] for e in body["errors"]] == ["neg", "far", "back"]
    assert body["detail"].startswith("3 of 5 series refused")
    assert "LATENTCAST_MAX_HORIZON_FACTOR" in body["errors"][1]["msg"]
    skip = post(url, {"series": series, "on_error": "skip"})
    assert skip.status_code == 200
    out = skip.json()
    assert [f["id"] for f in out["forecasts"]] == ["a", "b"]
    assert [(e["series_id"], e["loc"][:3]) for e in out["errors"]] == [
        ("neg", ["series", 1, "values"]),
        ("far", ["series", 3, "query_times"]),
        ("back", ["series", 4, "timestamps"]),
    ]
    alone = post(url, {"series": [_series("b")]}).json()["forecasts"][0]
    same(out["forecasts"][1], alone)
    arrow = post_arrow(url, encode_series(series), "?model=pbcseq&on_error=skip")
    table = read_stream(arrow.content)
    assert arrow.status_code == 200 and sorted(set(table.column("id").to_pylist())) == ["a", "b"]
    assert [e["series_id"] for e in json.loads(table.schema.metadata[b"latentcast.errors"])] == ["neg", "far", "back"]


def test_skip_with_every_series_refused_is_an_empty_answer(url: str) -> None:
    r = post(url, {"series": [_series("neg", values=_row0(c0=-1.0))], "on_error": "skip"})
    assert r.status_code == 200 and r.json()["forecasts"] == [] and len(r.json()["errors"]) == 1


def test_a_series_with_a_malformed_field_fails_alone_under_skip(url: str) -> None:
    series = [_series("a"), _series("str", values=[["x"] * 7] * 3), {"id": "no-times", "values": []}]
    r = post(url, {"series": series, "on_error": "skip"})
    assert r.status_code == 200
    assert [f["id"] for f in r.json()["forecasts"]] == ["a"]
    assert [e["loc"][1] for e in r.json()["errors"]] == [1, 2]


def test_arrow_options_may_come_from_the_streams_metadata(url: str) -> None:
    table = read_stream(encode_series([_series("a"), _series("neg", values=_row0(c0=-1.0))]))
    body = write_stream(table.replace_schema_metadata({"model": "pbcseq", "on_error": "skip"}))
    r = post_arrow(url, body, "")
    assert r.status_code == 200, r.text
    assert json.loads(read_stream(r.content).schema.metadata[b"latentcast.errors"])[0]["series_id"] == "neg"
    twice = post_arrow(url, body, "?on_error=raise")
    assert twice.status_code == 400 and "both in the query string and in the stream's metadata" in twice.text


def test_physionet_unknown_codes_are_not_measurements_and_answers_stay_in_bounds(url: str) -> None:
    info = next(m for m in httpx.get(f"{url}/models").json()["models"] if m["name"] == "physionet2012")
    assert info["missing_values"] == {c: [-1.0] for c in info["channels"]}
    assert info["bounds"]["pH"] == [6.3, 10.0] and info["bounds"]["HR"] == [0.0, 390.0]
    assert "mimic3-benchmarks" in info["bounds_source"]
    channels = info["channels"]
    row0: list[float | None] = [None] * len(channels)
    for name, v in (("Age", 70.0), ("Gender", 1.0), ("Height", -1.0), ("ICUType", 2.0), ("Weight", -1.0)):
        row0[channels.index(name)] = v
    row1: list[float | None] = [None] * len(channels)
    row1[channels.index("HR")], row1[channels.index("Temp")] = 88.0, -17.8  # 0 °F: not a temperature
    record = {"id": "r", "timestamps": [0.0, 1.5], "values": [row0, row1], "query_times": [30.0]}
    r = post(url, {"model": "physionet2012", "series": [record]})
    assert r.status_code == 200, r.text
    f = r.json()["forecasts"][0]
    mean = dict(zip(channels, f["mean"][0], strict=True))
    assert mean["Height"] > 100 and mean["Weight"] > 20  # not a forecast of the -1 code
    lo = np.asarray(f["quantiles"]["0.1"][0], dtype=float)
    bounds = info["bounds"]
    for j, c in enumerate(channels):
        if c in bounds and bounds[c][0] is not None:
            assert lo[j] >= bounds[c][0]
    (w,) = f["warnings"]
    assert w["kind"] == "out_of_bounds" and "'Temp' = -17.8 (bounds [14.2, 47])" in w["msg"]


# ------------------------------------------------------------------------------------------------
# the holes a hostile client found


def test_a_repeated_arrow_column_is_a_422_naming_it(url: str) -> None:
    table = read_stream(encode_series([GOOD]))
    dup = pa.Table.from_arrays([*table.columns, table.column("id")], names=[*table.column_names, "id"])
    r = post_arrow(url, write_stream(dup))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["columns", "id"], r.text


def test_trailing_bytes_after_an_arrow_stream_are_a_400(url: str) -> None:
    r = post_arrow(url, encode_series([GOOD]) + b"garbage")
    assert r.status_code == 400 and "follow the end of the stream" in r.json()["detail"]


DATES = ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-12-01T00:00:00Z"]


@pytest.mark.parametrize(
    ("first", "match"),
    [
        ("0000-01-01T00:00:00Z", "outside the years 0001–9999"),
        ("２０２６-01-01", "ASCII digits"),
        ("٢٠٢٦-٠١-٠١", "ASCII digits"),
        ("2025-12-31T23:59:60Z", "leap second"),
        ("2026-01-01T24:00:00Z", "hour 24"),
    ],
)
def test_date_times_are_ascii_iso_8601_within_the_years_1_to_9999(url: str, first: str, match: str) -> None:
    r = post(url, {"series": [_series("d", timestamps=[first, *DATES[1:]], query_times=[DATES[2]])]})
    assert r.status_code == 422 and match in r.json()["detail"], r.text


def test_arrow_timestamps_outside_the_years_1_to_9999_are_refused(url: str) -> None:
    far = pa.array([0, 10**17], pa.timestamp("s", tz="UTC"))  # year ≈ 3.2e9
    table = pa.table(
        {
            "id": ["a"],
            "timestamps": pa.ListArray.from_arrays(pa.array([0, 2], pa.int32()), far),
            "values": pa.array([[[1.0] * 7] * 2], pa.list_(pa.list_(pa.float64()))),
            "query_times": pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array([0], pa.timestamp("s"))),
        }
    )
    r = post_arrow(url, write_stream(table))
    assert r.status_code == 422 and "outside the years 0001–9999" in r.json()["detail"], r.text


def test_nanoseconds_apart_is_refused_never_merged_silently(url: str) -> None:
    stamps = ["2026-01-01T00:00:00.000000001Z", "2026-01-01T00:00:00.000000002Z", "2026-06-01T00:00:00Z"]
    r = post(url, {"series": [_series("ns", timestamps=stamps, query_times=["2026-12-01"])]})
    assert r.status_code == 422 and "less than a microsecond apart" in r.json()["detail"], r.text
    ns = np.array(["2026-01-01T00:00:00.000000001", "2026-01-01T00:00:00.000000002", "2026-06-01"], "datetime64[ns]")
    table = pa.table(
        {
            "id": ["ns"],
            "timestamps": pa.ListArray.from_arrays(pa.array([0, 3], pa.int32()), pa.array(ns)),
            "values": pa.array([GOOD["values"]], pa.list_(pa.list_(pa.float64()))),
            "query_times": pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array(ns[2:])),
        }
    )
    a = post_arrow(url, write_stream(table))
    assert a.status_code == 422 and "less than a microsecond apart" in a.json()["detail"], a.text
    micro = ["2026-01-01T00:00:00.000001Z", "2026-01-01T00:00:00.000002Z", "2026-06-01T00:00:00Z"]
    assert post(url, {"series": [_series("us", timestamps=micro, query_times=["2026-12-01"])]}).status_code == 200


def test_compressed_bodies_are_inflated_within_the_limit_or_refused(url: str) -> None:
    plain = json.dumps({"model": "pbcseq", "series": [GOOD]}).encode()
    want = post(url, plain).json()
    for coding, body in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        r = post(url, body, headers={"content-encoding": coding})
        assert r.status_code == 200 and r.json() == want, (coding, r.text)
    arrow = post_arrow(
        url, gzip.compress(encode_series([GOOD])), **{"content-encoding": "gzip", "accept": "application/json"}
    )
    assert arrow.status_code == 200 and arrow.json()["forecasts"][0]["mean"] == want["forecasts"][0]["mean"]
    assert post(url, plain, headers={"content-encoding": "br"}).status_code == 415
    assert post(url, gzip.compress(plain)[:-9], headers={"content-encoding": "gzip"}).status_code == 400
    bomb = gzip.compress(b"{" + b" " * (33 * 2**20) + b"}")  # 33 MiB of spaces, ~33 KiB on the wire
    r = post(url, bomb, headers={"content-encoding": "gzip"})
    assert len(bomb) < 2**20 and r.status_code == 413 and "once decompressed" in r.json()["detail"]


def test_head_works_wherever_get_does(url: str) -> None:
    for path in ("/healthz", "/readyz", "/models", "/metrics", "/openapi.json"):
        get, head = httpx.get(f"{url}{path}"), httpx.head(f"{url}{path}")
        assert head.status_code == get.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"]
    assert httpx.head(f"{url}/forecast").status_code == 405


@pytest.mark.parametrize("value", ["5", 5.0, True])
def test_options_are_typed_strictly(url: str, value: Any) -> None:
    r = post(url, {"series": [GOOD], "num_samples": value})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["num_samples"], r.text


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("?model=pbcseq&quantiles=0_5", "'0_5' is not a number"),
        ("?model=pbcseq&num_samples=%D9%A5", "not a whole number"),
        ("?model=pbcseq&num_samples=5.0", "not a whole number"),
        ("?model=pbcseq&rtol=1e-3_0", "not a number"),
    ],
)
def test_arrow_options_are_typed_strictly(url: str, query: str, match: str) -> None:
    r = post_arrow(url, encode_series([GOOD]), query)
    assert r.status_code == 422 and match in r.json()["detail"], r.text


def test_a_key_given_twice_and_a_repeated_parameter_are_400s(url: str) -> None:
    body = b'{"model": "pbcseq", "model": "spirals", "series": [' + json.dumps(GOOD).encode() + b"]}"
    r = post(url, body)
    assert r.status_code == 400 and 'duplicate key "model"' in r.json()["detail"]
    inner = json.dumps(GOOD).replace('"id": "good"', '"id": "a", "id": "b"').encode()
    assert post(url, b'{"series": [' + inner + b"]}").status_code == 400
    r = post_arrow(url, encode_series([GOOD]), "?model=pbcseq&model=spirals")
    assert r.status_code == 400 and "'model' is given more than once" in r.json()["detail"]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (f"{MEDIA_TYPE};q=0, application/json", "application/json"),
        (f"application/json;q=0.5, {MEDIA_TYPE}", MEDIA_TYPE),
        ("*/*", "application/json"),
        (f"application/*;q=0.2, {MEDIA_TYPE};q=0.9", MEDIA_TYPE),
        ("text/html", None),
    ],
)
def test_accept_q_values_are_honoured(url: str, accept: str, media: str | None) -> None:
    r = post(url, {"series": [GOOD]}, headers={"accept": accept})
    if media is None:
        assert r.status_code == 406, r.text
    else:
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)


@pytest.fixture(scope="module")
def keyed() -> Iterator[str]:
    with ServerProcess({"LATENTCAST_API_KEY": KEY}, "cpu", timeout=SERVER_START_S) as srv:
        yield srv.url


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"bearer {KEY}"}, 200),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"X-API-Key": KEY}, 200),
        ({"Authorization": KEY}, 401),
        ({"Authorization": f"Bearer {KEY}", "X-API-Key": "x" * 24}, 400),
        ([("X-API-Key", KEY), ("X-API-Key", "x" * 24)], 400),
        ([("X-API-Key", "x" * 24), ("X-API-Key", KEY)], 400),
        ({}, 401),
    ],
)
def test_one_api_key_parser_guards_every_protected_path(keyed: str, headers: Any, status: int) -> None:
    got = {
        path: httpx.request(method, f"{keyed}{path}", headers=headers, json=body).status_code
        for path, method, body in (
            ("/forecast", "POST", {"model": "pbcseq", "series": [GOOD]}),
            ("/models", "GET", None),
            ("/metrics", "GET", None),
            ("/openapi.json", "GET", None),
        )
    }
    assert set(got.values()) == {status}, got
    assert httpx.get(f"{keyed}/healthz").status_code == 200  # liveness needs no key


# ------------------------------------------------------------------------------------------------
# a good series' answer never depends on its company


_KINDS = ["good", "log0", "inf", "order", "far", "unusual", "empty", "rows"]


def _make(kind: str, i: int, rng: np.random.Generator) -> dict[str, Any]:
    t = np.cumsum(rng.uniform(30.0, 400.0, 3)).round(1).tolist()
    values = [[float(v) for v in rng.uniform(1.0, 3.0, 7).round(3)] for _ in range(3)]
    s = {"id": f"{kind}{i}", "timestamps": t, "values": values, "query_times": [t[-1] + 200.0, t[0] - 10.0]}
    if kind == "log0":
        s["values"][1][0] = 0.0
    elif kind == "inf":
        s["values"][0][4] = 1e300
    elif kind == "order":
        s["timestamps"] = [t[1], t[0], t[2]]
    elif kind == "far":
        s["query_times"] = [1e7]
    elif kind == "unusual":
        s["values"][2][2] = 5e5
    elif kind == "empty":
        s["values"] = [[None] * 7] * 3
    elif kind == "rows":
        s["values"] = s["values"][:2]
    return s


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(_KINDS), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_good_series_get_exactly_their_answers_alone(url: str, kinds: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    series = [_make(k, i, rng) for i, k in enumerate(kinds)]
    together = post(url, {"series": series, "on_error": "skip", "quantiles": [0.1, 0.9]})
    assert together.status_code == 200, together.text
    answers = {f["id"]: f for f in together.json()["forecasts"]}
    refused = {e["series_id"] for e in together.json()["errors"]}
    for s in series:
        alone = post(url, {"series": [s], "quantiles": [0.1, 0.9]})
        if alone.status_code == 200:
            mine = alone.json()["forecasts"][0]
            got = answers[s["id"]]
            same(got, mine)
            assert got["warnings"] == [
                {**w, "loc": ["series", series.index(s), *w["loc"][2:]]} for w in mine["warnings"]
            ]
        else:
            assert alone.status_code == 422 and s["id"] in refused


def test_a_negative_declared_length_cannot_hide_an_arrow_bomb(url: str) -> None:
    import struct

    n = 200_000  # 1.6 MB of zeros in one buffer, a few KB compressed
    table = pa.table(
        {
            "id": ["a"],
            "timestamps": pa.array([list(np.zeros(n))], pa.list_(pa.float64())),
            "values": pa.array([[[1.0] * 7]], pa.list_(pa.list_(pa.float64()))),
            "query_times": pa.array([[1.0]], pa.list_(pa.float64())),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    body = bytearray(sink.getvalue().to_pybytes())
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(bytes(body)))
    reader.read_next_message()
    batch = reader.read_next_message().body.to_pybytes()
    start = bytes(body).find(batch)
    for at in range(len(batch) - 16, 0, -8):  # the last buffer with a length prefix
        (raw,) = struct.unpack_from("<q", batch, at)
        if 0 < raw < 2**20:
            struct.pack_into("<q", body, start + at, -(10**12))
            break
    r = post_arrow(url, bytes(body))
    assert r.status_code == 400 and "declares -1000000000000 bytes" in r.json()["detail"], r.text


def test_many_copies_of_one_id_are_refused_in_linear_time(url: str) -> None:
    body = {"series": [_series("same") for _ in range(3000)], "on_error": "skip"}
    r = post(url, body)
    assert r.status_code == 200 and r.json()["forecasts"] == []
    errors = r.json()["errors"]
    assert (
        len(errors) == 3000 and errors[0]["msg"] == "duplicate id (also series[1], series[2], series[3] and 2996 more)"
    )


def test_starlettes_own_errors_have_the_usual_body(url: str) -> None:
    r = httpx.get(f"{url}/nowhere")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found", "errors": []}
