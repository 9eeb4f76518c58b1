"""The Arrow wire format: same forecasts as JSON, the same checks and messages, content negotiation."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from latentcast import arrowio
from latentcast.service.formats import arrow
from tests.service.conftest import labs_series

ARROW = {"content-type": arrow.MEDIA_TYPE}


def _post_arrow(client: TestClient, body: bytes, params: str = "", **headers: str) -> Any:
    return client.post(f"/forecast{params}", content=body, headers={**ARROW, **headers})


def _stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _series() -> list[dict[str, Any]]:
    return [labs_series("p1"), labs_series("p2", n=2, seed=1), labs_series("p3", n=6, seed=2)]


def test_arrow_request_gives_the_json_forecasts_as_a_long_table(client: TestClient) -> None:
    series = _series()
    js = client.post("/forecast", json={"series": series, "quantiles": [0.9, 0.1]}).json()
    r = _post_arrow(client, arrowio.encode_series(series), "?quantiles=0.9,0.1&model=labs")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == arrow.MEDIA_TYPE
    table = arrowio.read_stream(r.content)
    assert table.column_names == ["id", "time", "channel", "point", "mean", "q0.9", "q0.1", "nfe"]
    meta = table.schema.metadata
    assert meta[b"latentcast.model"] == b"labs" and meta[b"latentcast.version"].decode() == js["model"]["version"]
    frame = table.to_pandas()
    assert len(frame) == sum(len(s["query_times"]) for s in series) * 3
    for f in js["forecasts"]:
        part = frame[frame["id"] == f["id"]]
        assert part["time"].tolist() == [t for t in f["query_times"] for _ in range(3)]
        assert part["channel"].tolist() == js["channels"] * len(f["query_times"])
        np.testing.assert_allclose(part["mean"].to_numpy().reshape(-1, 3), f["mean"], rtol=1e-6)
        np.testing.assert_allclose(part["q0.1"].to_numpy().reshape(-1, 3), f["quantiles"]["0.1"], rtol=1e-6)


def test_date_times_fixed_size_rows_and_samples(client: TestClient) -> None:
    base = np.datetime64("2026-01-01T00:00:00", "ns")
    times = base + np.array([0, 30, 95], dtype="timedelta64[D]")
    queries = base + np.array([120, -10], dtype="timedelta64[D]")
    values = np.array([[1.0, 2.0, np.nan], [np.nan, 2.5, 1.0], [1.2, np.nan, np.nan]])
    body = arrowio.encode_request(["d1"], times, np.array([0, 3]), values, queries, np.array([0, 2]))
    r = _post_arrow(client, body, "?num_samples=4")
    assert r.status_code == 200, r.text
    table = arrowio.read_stream(r.content)
    assert pa.types.is_timestamp(table.schema.field("time").type)
    samples = table.column("samples").combine_chunks()
    assert samples.type.list_size == 4 and len(samples) == 2 * 3
    # the same series in JSON, ISO strings: same numbers
    js = client.post(
        "/forecast",
        json={
            "series": [
                {
                    "id": "d1",
                    "timestamps": ["2026-01-01", "2026-01-31", "2026-04-06"],
                    "values": [[1.0, 2.0, None], [None, 2.5, 1.0], [1.2, None, None]],
                    "query_times": ["2026-05-01", "2025-12-22"],
                }
            ]
        },
    ).json()
    np.testing.assert_allclose(table.column("mean").to_numpy().reshape(2, 3), js["forecasts"][0]["mean"], rtol=1e-6)


def test_content_negotiation(client: TestClient) -> None:
    series = _series()[:1]
    r = _post_arrow(client, arrowio.encode_series(series), accept="application/json")
    assert r.headers["content-type"] == "application/json"
    assert r.json()["forecasts"][0]["query_times"] == series[0]["query_times"]
    r = client.post("/forecast", json={"series": series}, headers={"accept": arrow.MEDIA_TYPE})
    assert r.headers["content-type"] == arrow.MEDIA_TYPE
    assert arrowio.read_stream(r.content).column("time").to_pylist()[::3] == series[0]["query_times"]


def _table(**override: Any) -> pa.Table:
    cols: dict[str, Any] = {
        "id": pa.array(["a", "b"]),
        "timestamps": pa.array([[0.0, 10.0], [5.0]]),
        "values": pa.array([[[1.0, 2.0, 3.0], [1.0, None, 2.0]], [[2.0, 2.0, 2.0]]]),
        "query_times": pa.array([[20.0], [7.0, 9.0]]),
    }
    cols.update(override)
    return pa.table({k: v for k, v in cols.items() if v is not None})


@pytest.mark.parametrize(
    ("body", "params", "status", "match"),
    [
        (b"not arrow", "", 400, "malformed Arrow IPC stream"),
        (_stream(_table(query_times=None)), "", 422, "columns.query_times: missing column"),
        (_stream(_table(extra=pa.array([1, 2]))), "", 422, "columns.extra: unknown column"),
        (_stream(_table(id=pa.array(["a", None]))), "", 422, r"series\[1\]\.id: must not be null"),
        (_stream(_table(id=pa.array(["a", "a"]))), "", 422, r"series\[0\]\.id: duplicate id \(also series\[1\]\)"),
        (_stream(_table(timestamps=pa.array([[0.0, 0.0], [5.0]]))), "", 422, r"timestamps\[1\]: must be strictly"),
        (_stream(_table(timestamps=pa.array([[0.0, None], [5.0]]))), "", 422, r"timestamps\[1\]: must not be null"),
        (_stream(_table(timestamps=pa.array([[0.0, 10.0], []]))), "", 422, r"series\[1\]\.timestamps: must hold"),
        (_stream(_table(timestamps=pa.array([["x", "y"], ["z"]]))), "", 422, "must hold numbers"),
        (
            _stream(_table(values=pa.array([[[1.0, 2.0], [1.0, 2.0, 3.0]], [[2.0, 2.0, 2.0]]]))),
            "",
            422,
            r"series 'a': series\[0\]\.values\[0\]: row has 2 values; model 'labs' has 3",
        ),
        (
            _stream(_table(values=pa.array([[[1.0, 2.0, 3.0], [1.0, 2.0, np.inf]], [[2.0, 2.0, 2.0]]]))),
            "",
            422,
            r"values\[1\]: must be finite",
        ),
        (
            _stream(_table(values=pa.array([[[1.0, 2.0, 3.0], [None, None, None]], [[None, np.nan, None]]]))),
            "",
            422,
            r"series 'b': series\[1\]\.values: no observed value",
        ),
        (_stream(_table(query_times=pa.array([[20.0], [7.0, 1e6]]))), "", 422, r"query_times\[1\]: 1000000.0 lies"),
        (_stream(_table()), "?quantiles=0.5,x", 422, "'x' is not a number"),
        (_stream(_table()), "?quantiles=0.5,1.5", 422, r"quantiles\[1\]: 1.5 is not in"),
        (_stream(_table()), "?num_samples=-1", 422, "'-1' is not a whole number ≥ 0"),
        (_stream(_table()), "?seed=1", 422, "query.seed: unknown parameter"),
        (_stream(_table()), "?model=nope", 404, "unknown model 'nope'"),
        (_stream(_table()), "?model=", 422, "model: an empty name; omit the field for the default model"),
    ],
)
def test_bad_arrow_requests_are_precise_4xx(
    client: TestClient, body: bytes, params: str, status: int, match: str
) -> None:
    r = _post_arrow(client, body, params)
    assert r.status_code == status, r.text
    assert re.search(match, r.json()["detail"]), r.json()["detail"]


def test_nan_and_null_both_mean_not_observed(client: TestClient) -> None:
    with_nan = _table(values=pa.array([[[1.0, np.nan, 3.0], [1.0, np.nan, 2.0]], [[2.0, 2.0, np.nan]]]))
    with_null = _table(values=pa.array([[[1.0, None, 3.0], [1.0, None, 2.0]], [[2.0, 2.0, None]]]))
    a = arrowio.read_stream(_post_arrow(client, _stream(with_nan)).content)
    b = arrowio.read_stream(_post_arrow(client, _stream(with_null)).content)
    np.testing.assert_array_equal(a.column("mean").to_numpy(), b.column("mean").to_numpy())


def test_query_parameters_with_a_json_body_are_refused(client: TestClient) -> None:
    r = client.post("/forecast?model=labs", json={"series": [labs_series()]})
    assert r.status_code == 422 and "query parameters go with Arrow bodies" in r.json()["detail"]


@pytest.mark.parametrize("dates", [False, True])
def test_arrow_and_json_bodies_prepare_the_same_job(dates: bool) -> None:
    from tests.service.formats.test_json import LABS, _plain, _random_request, prepare

    rng = np.random.default_rng(11)
    for _ in range(4):
        req = _random_request(rng, 25, dates)
        series = [s.model_dump() for s in req.series]
        job_json = prepare(req, LABS, _plain())
        job_arrow = arrow.decode(arrowio.encode_series(series), {}, lambda name: LABS, _plain())
        a, b = job_json.packed, job_arrow.packed
        assert a.ids == b.ids
        for x, y in zip(
            (a.times, a.values, a.offsets, a.queries, a.query_offsets),
            (b.times, b.values, b.offsets, b.queries, b.query_offsets),
            strict=True,
        ):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("num_samples", [0, 5])
def test_answer_bytes_bound_the_encoded_answers(client: TestClient, num_samples: int) -> None:
    """Each format's estimate, known before solving, is never below the answer it encodes."""
    from latentcast.service.formats import json as json_format
    from tests.service.formats.test_json import LABS, _plain, _random_request, prepare

    rng = np.random.default_rng(3)
    for dates in (False, True):
        req = _random_request(rng, 12, dates)
        series = [
            s.model_copy(
                update={
                    "id": "é" * 200 + s.id,
                    "values": [[None if v is None else abs(v) + 0.1 for v in row] for row in s.values],
                }
            )
            for s in req.series
        ]
        req = req.model_copy(update={"num_samples": num_samples, "series": series})
        job = prepare(req, LABS, _plain())
        body = req.model_dump_json(exclude_none=True).encode()
        r = client.post("/forecast", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert len(r.content) <= json_format.answer_bytes(job)
        a = client.post(
            "/forecast", content=body, headers={"content-type": "application/json", "accept": arrow.MEDIA_TYPE}
        )
        assert a.status_code == 200 and len(a.content) <= arrow.answer_bytes(job)
        assert json_format.answer_bytes(job) < 4 * len(r.content)  # and not wildly above it


def test_repeated_columns_are_named_among_many(client: TestClient) -> None:
    base = _table()
    extra = [pa.array([0, 0], pa.int8())] * 20_000  # a wide body: its names are checked in one pass
    names = [*base.column_names, *(f"c{k}" for k in range(19_999)), "c7"]
    wide = pa.Table.from_arrays([*base.columns, *extra], names=names)
    r = _post_arrow(client, _stream(wide), "")
    assert r.status_code == 422 and "columns.c7: the column appears more than once" in r.json()["detail"]
