"""Hostile clients against a real `latentcast serve` on 127.0.0.1: each class of bad input gets its precise
4xx, the server stays healthy, and a good request afterwards gets exactly the numbers it got before."""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from bench.server import ServerProcess
from latentcast.arrowio import MEDIA_TYPE, encode_series, write_stream
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
SETTINGS = {
    "LATENTCAST_HEADER_TIMEOUT_S": "1",
    "LATENTCAST_BODY_TIMEOUT_S": "2",
    "LATENTCAST_MAX_BODY_BYTES": str(4 * 2**20),
    "LATENTCAST_MAX_ERRORS": "5",
    "LATENTCAST_OFFLOAD_BYTES": "65536",
}


class Hostile:
    def __init__(self, server: ServerProcess):
        self.server = server
        self.url = server.url
        self.baseline = self.good()

    def good(self) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/forecast", json={"model": "pbcseq", "series": [GOOD]}, timeout=30)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def still_healthy(self) -> None:
        assert httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        assert self.good() == self.baseline  # the same numbers as before any hostile request
        assert self.server.proc.poll() is None

    def post(self, body: bytes, content_type: str = "application/json", query: str = "", **kw: Any) -> httpx.Response:
        headers = {"content-type": content_type, **kw.pop("headers", {})}
        return httpx.post(f"{self.url}/forecast{query}", content=body, headers=headers, timeout=60, **kw)


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    with ServerProcess(SETTINGS, "cpu", timeout=SERVER_START_S) as srv:
        yield Hostile(srv)


def _series(**changes: Any) -> dict[str, Any]:
    return {**GOOD, "id": "bad", **changes}


def _json(*series: dict[str, Any], **top: Any) -> bytes:
    return httpx.Request("POST", "/", json={"model": "pbcseq", "series": list(series), **top}).content


DATES = ["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-12-01T00:00:00Z"]
JSON_CASES: list[tuple[str, bytes, int, str]] = [
    *[
        (f"date {bad!r}", _json(_series(timestamps=[bad, *DATES[1:]], query_times=[DATES[2]])), 422, "ISO-8601")
        for bad in ("", "NaT", "nan", "now", "today", "2026/01/01")
    ],
    (
        "date beyond pandas' nanoseconds",
        _json(_series(timestamps=DATES, query_times=["9999-12-31"])),
        422,
        "the limit is",
    ),
    ("timestamps 0 and 1e308", _json(_series(timestamps=[0.0, 1.0, 1e308])), 422, "observations span 1e\\+308 days"),
    (
        "value beyond float32",
        _json(_series(values=[[1e39, *GOOD["values"][0][1:]], *GOOD["values"][1:]])),
        422,
        "beyond float32",
    ),
    (
        "zero on a log channel",
        _json(_series(values=[[0.0, *GOOD["values"][0][1:]], *GOOD["values"][1:]])),
        422,
        "'bili' is modelled on a log scale",
    ),
    (
        "negative on a log channel",
        _json(_series(values=[[-1.0, *GOOD["values"][0][1:]], *GOOD["values"][1:]])),
        422,
        "values must be > 0",
    ),
    (
        "NaN as a value",
        _json(_series()).replace(b"[1.2,null,3.4,", b"[NaN,null,3.4,", 1),
        422,
        "finite number",
    ),
    ("126-year span", _json(_series(timestamps=[0.0, 100.0, 46_000.0])), 422, "observations span"),
    ("top-level array", b"[1, 2]", 400, "JSON object"),
    ("top-level number", b"3", 400, "JSON object"),
    ("top-level null", b"null", 400, "JSON object"),
    ("top-level string", b'"x"', 400, "JSON object"),
    ("not JSON", b"{", 400, "malformed JSON"),
    ("quantile 1e-300", _json(GOOD, quantiles=[1e-300]), 422, "CDF tolerance"),
    ("100,000 quantiles", _json(GOOD, quantiles=[0.5] * 100_000), 422, "LATENTCAST_MAX_QUANTILES"),
    ("a repeated quantile", _json(GOOD, quantiles=[0.1, 0.5, 0.5]), 422, "0.5 is repeated"),
    ("an empty model name", _json(GOOD, model=""), 422, "empty name; omit the field for the default"),
    (
        "1 GiB answer",
        _json(*[_series(id=f"s{i}", query_times=[400.0 + k for k in range(2000)]) for i in range(30)], num_samples=256),
        413,
        "LATENTCAST_MAX_RESPONSE_VALUES",
    ),
    ("body over the limit", b'{"series": [' + b" " * (5 * 2**20) + b"]}", 413, "LATENTCAST_MAX_BODY_BYTES"),
]


@pytest.mark.parametrize(("name", "body", "status", "match"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_hostile_json(hostile: Hostile, name: str, body: bytes, status: int, match: str) -> None:
    r = hostile.post(body)
    assert r.status_code == status, r.text[:300]
    assert r.json()["detail"] and __import__("re").search(match, r.json()["detail"]), r.json()["detail"]
    hostile.still_healthy()


def test_many_errors_are_listed_up_to_the_limit_and_counted(hostile: Hostile) -> None:
    bad = [_series(id=f"s{i}", values=[["x"] * 7] * 3) for i in range(300)]
    r = hostile.post(_json(*bad))
    assert r.status_code == 422
    body = r.json()
    assert len(body["errors"]) == 5 and body["errors_total"] > 1000 and len(r.content) < 10_000
    hostile.still_healthy()


def _arrow_table(timestamps: pa.Array) -> pa.Table:
    values = pa.array([[[1.0] * 7] * 2], pa.list_(pa.list_(pa.float64())))
    return pa.table(
        {
            "id": ["a"],
            "timestamps": pa.ListArray.from_arrays(pa.array([0, 2], pa.int32()), timestamps),
            "values": values,
            "query_times": pa.array([[400.0]]),
        }
    )


def _bomb(points: int) -> bytes:
    """A zstd-compressed stream of one series of `points` zero observations: tiny on the wire."""
    one = pa.array(np.array([0, points], dtype=np.int32))
    values = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(points * 7)), 7)
    times = pa.ListArray.from_arrays(one, pa.array(np.zeros(points)))
    table = pa.table(
        {"id": ["a"], "timestamps": times, "values": pa.ListArray.from_arrays(one, values), "query_times": times}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _forged_length(body: bytes) -> bytes:
    """The first compressed buffer's uncompressed-length prefix set to 2^40."""
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body))
    reader.read_next_message()
    batch = reader.read_next_message()
    body_bytes = batch.body.to_pybytes()
    start = body.find(body_bytes)
    forged = bytearray(body)
    for at in range(0, len(body_bytes) - 8, 8):  # the first buffer with a real length prefix
        (raw,) = struct.unpack_from("<q", body_bytes, at)
        if 0 < raw < 2**31:
            struct.pack_into("<q", forged, start + at, 2**40)
            break
    return bytes(forged)


def _bad_offsets() -> bytes:
    """A valid stream whose query-time list offsets are then patched to run past their values."""
    table = _arrow_table(pa.array([0.0, 1.0])).set_column(3, "query_times", pa.array([[400.0 + k for k in range(7)]]))
    body = write_stream(table)
    at = body.find(struct.pack("<ii", 0, 7))
    assert at > 0
    return body[:at] + struct.pack("<ii", 0, 1000) + body[at + 8 :]


ARROW_CASES: list[tuple[str, Callable[[], bytes], int, str]] = [
    ("integers above 2^53", lambda: write_stream(_arrow_table(pa.array([0, 2**60], pa.int64()))), 422, "2\\^53"),
    ("invalid list offsets", _bad_offsets, 400, "malformed Arrow"),
    ("zstd bomb", lambda: _bomb(1_000_000), 413, "bytes once decompressed"),
    ("forged uncompressed length", lambda: _forged_length(_bomb(1000)), 413, "bytes once decompressed"),
    ("not Arrow", lambda: b"\x00" * 64, 400, "malformed Arrow"),
]


@pytest.mark.parametrize(("name", "make", "status", "match"), ARROW_CASES, ids=[c[0] for c in ARROW_CASES])
def test_hostile_arrow(hostile: Hostile, name: str, make: Callable[[], bytes], status: int, match: str) -> None:
    body = make()
    assert len(body) < 2**20  # every one of these is small on the wire
    r = hostile.post(body, MEDIA_TYPE, "?model=pbcseq")
    assert r.status_code == status, r.text[:300]
    assert __import__("re").search(match, r.json()["detail"]), r.json()["detail"]
    hostile.still_healthy()


def test_arrow_dates_are_parsed_like_json(hostile: Hostile) -> None:
    series = dict(_series(timestamps=DATES, query_times=["2027-01-01T00:00:00Z"]))
    r = hostile.post(encode_series([series]), MEDIA_TYPE, "?model=pbcseq", headers={"accept": "application/json"})
    j = hostile.post(_json(series), headers={})
    assert r.status_code == j.status_code == 200
    np.testing.assert_allclose(r.json()["forecasts"][0]["mean"], j.json()["forecasts"][0]["mean"], rtol=1e-6)


def _connect(hostile: Hostile) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", hostile.server.port))
    s.settimeout(10)
    return s


def test_connections_that_send_nothing_or_trickle_are_closed(hostile: Hostile) -> None:
    idle, partial, trickle = _connect(hostile), _connect(hostile), _connect(hostile)
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    trickle.sendall(
        b"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 999\r\n\r\n{"
    )
    t0 = time.monotonic()
    assert idle.recv(100) == b""  # closed after LATENTCAST_HEADER_TIMEOUT_S (1 s)
    assert partial.recv(100).startswith(b"HTTP/1.1 408")
    assert b"408" in trickle.recv(200).split(b"\r\n")[0]  # LATENTCAST_BODY_TIMEOUT_S (2 s)
    assert time.monotonic() - t0 < 6
    hostile.still_healthy()


def test_oversized_headers_are_431(hostile: Hostile) -> None:
    s = _connect(hostile)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000)
    assert s.recv(100).startswith(b"HTTP/1.1 431")
    hostile.still_healthy()


def test_a_non_utf8_request_id_is_replaced_not_a_500(hostile: Hostile) -> None:
    s = _connect(hostile)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: \xff\xfe\r\nConnection: close\r\n\r\n")
    head = s.recv(1000)
    assert head.startswith(b"HTTP/1.1 200") and b"x-request-id: " in head
    hostile.still_healthy()


def test_a_client_that_leaves_mid_body_is_no_bug(hostile: Hostile) -> None:
    for _ in range(5):
        s = _connect(hostile)
        s.sendall(
            b'POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"se'
        )
        s.close()
    time.sleep(0.3)
    hostile.still_healthy()
    assert "this is a bug" not in hostile.server.output() and "Traceback" not in hostile.server.output()


def _told(socks: list[socket.socket], wait: float = 2.0) -> list[bytes | None]:
    """What each socket received before it was closed (b"" if closed without a word), None if still open."""
    out: list[bytes | None] = [None] * len(socks)
    end = time.monotonic() + wait
    while any(o is None for o in out) and (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([s for s, o in zip(socks, out, strict=True) if o is None], [], [], left)
        if not ready:
            break
        for s in ready:
            k = socks.index(s)
            got = s.recv(300)
            out[k] = got + (b"" if not got else s.recv(300))
    return out


def test_sockets_that_hold_every_connection_slot_make_room_for_real_requests() -> None:
    """A client that opens LATENTCAST_MAX_CONNECTIONS sockets and sends nothing, part of its headers, or a
    trickle of body does not lock others out: each new request takes the place of one of them, those
    doing nothing longest first, then the slowest upload."""
    env = {"LATENTCAST_MAX_CONNECTIONS": "8", "LATENTCAST_HEADER_TIMEOUT_S": "60", "LATENTCAST_BODY_TIMEOUT_S": "60"}
    with ServerProcess(env, "cpu", timeout=SERVER_START_S) as srv:

        def hold(first: bytes) -> socket.socket:
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.settimeout(10)
            if first:
                s.sendall(first)
            return s

        upload = b"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 999\r\n\r\n{"
        silent = [hold(b"") for _ in range(4)]
        partial = [hold(b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(4)]
        time.sleep(1.5)  # past the grace a connection gets to send its headers before it can be taken
        assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200  # not 503
        r = httpx.post(f"{srv.url}/forecast", json={"model": "pbcseq", "series": [GOOD]}, timeout=30)
        assert r.status_code == 200, r.text
        assert _told(silent + partial) == [b""] + [None] * 7  # the one waiting longest, closed
        uploads = [hold(upload) for _ in range(8)]  # the 7 still waiting make room for them
        time.sleep(1.5)  # past the grace an upload gets before it can be taken
        assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200
        told = _told(silent[1:] + partial + uploads)
        for s in silent + partial + uploads:
            s.close()
        # every slot busy with a request being solved: nothing to take, so 503 with the JSON error contract
        body = json.dumps(
            {"model": "pbcseq", "series": [dict(GOOD, id=f"s{i}", query_times=[400.0] * 64) for i in range(400)]}
        ).encode()
        head = f"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        head += "\r\n\r\n"
        time.sleep(0.3)  # the closed sockets are gone from the server's count
        busy = [hold(head.encode() + body) for _ in range(8)]
        full = httpx.get(f"{srv.url}/healthz", timeout=10)
        for s in busy:
            s.close()
        metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
    assert told[:3] == [b"", b"", b""]  # silent: closed without a word
    assert all(t is not None and t.startswith(b"HTTP/1.1 503") and b"MAX_CONNECTIONS" in t for t in told[3:7]), told
    said = [t for t in told[7:] if t is not None]
    assert len(said) == 1 and said[0].startswith(b"HTTP/1.1 503"), told  # one upload, the slowest
    evicted = {
        phase: float(m.group(1))
        for phase in ("waiting", "body")
        if (m := re.search(rf'latentcast_connections_evicted_total\{{phase="{phase}"\}} ([0-9.e+]+)', metrics))
    }
    assert evicted == {"waiting": 8, "body": 1}
    assert full.status_code == 503 and full.headers["retry-after"] == "1", full.text
    assert "LATENTCAST_MAX_CONNECTIONS" in full.json()["detail"]
    assert 'latentcast_connections_evicted_total{phase="refused"} 1.0' in metrics


def test_a_series_whose_solve_blows_up_is_refused_naming_its_value_and_skip_answers_the_rest(
    hostile: Hostile,
) -> None:
    from latentcast.models.training.datasets.physionet2012 import CHANNELS

    row: list[float | None] = [None] * len(CHANNELS)
    first = row[:]
    first[CHANNELS.index("Albumin")] = 1e30  # finite, within float32, far beyond anything seen
    bad = {"id": "bad", "timestamps": [0, 1], "values": [first, row[:]], "query_times": [10.0, 90.0]}
    good_row = row[:]
    good_row[CHANNELS.index("HR")] = 90.0
    good = {"id": "ok", "timestamps": [0, 1], "values": [good_row, good_row], "query_times": [10.0]}
    raised = hostile.post(_body({"model": "physionet2012", "series": [bad, good]}))
    assert raised.status_code == 422, raised.text
    detail = raised.json()["detail"]
    assert "non-finite" in detail and "likely cause" in detail and "'Albumin' = 1e+30" in detail
    skipped = hostile.post(_body({"model": "physionet2012", "series": [bad, good], "on_error": "skip"}))
    assert skipped.status_code == 200, skipped.text  # was a 500: the kept forecasts were not C-ordered
    answer = skipped.json()
    assert [f["id"] for f in answer["forecasts"]] == ["ok"] and answer["errors"][0]["series_id"] == "bad"
    hostile.still_healthy()


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_json_in_another_charset_is_415_naming_it_and_utf8_is_read(hostile: Hostile) -> None:
    body = _json(GOOD)
    r = hostile.post(body.decode().encode("utf-16"), content_type="application/json; charset=utf-16")
    assert r.status_code == 415 and "charset 'utf-16'" in r.json()["detail"], r.text
    for declared in ('application/json; charset="UTF-8"', "application/json;charset=utf8"):
        assert hostile.post(body, content_type=declared).status_code == 200


def test_a_client_that_never_reads_its_answer_is_disconnected_and_the_answer_freed() -> None:
    """A large answer to a socket that reads nothing: past LATENTCAST_SEND_TIMEOUT_S the server drops the
    connection (and the unsent bytes), counts it, and goes on answering others."""
    env = {"LATENTCAST_SEND_TIMEOUT_S": "1"}
    with ServerProcess(env, "cpu", timeout=SERVER_START_S) as srv:
        body = json.dumps(
            {"model": "pbcseq", "quantiles": [round(0.05 * k, 2) for k in range(1, 20)],
             "series": [dict(GOOD, id=f"s{i}", query_times=[400.0 + j for j in range(300)]) for i in range(60)]}
        ).encode()  # fmt: skip
        head = f"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the answer backs up
        s.connect(("127.0.0.1", srv.port))
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
            if 'latentcast_connections_evicted_total{phase="send"} 1.0' in metrics:
                break
            time.sleep(0.5)
        assert 'latentcast_connections_evicted_total{phase="send"} 1.0' in metrics
        s.settimeout(10)
        got, closed = 0, False
        try:
            while chunk := s.recv(1 << 16):
                got += len(chunk)
            closed = True  # EOF
        except (ConnectionResetError, TimeoutError):
            closed = True  # reset: the server aborted
        s.close()
        full = httpx.post(f"{srv.url}/forecast", content=body, headers={"content-type": "application/json"}, timeout=60)
        assert full.status_code == 200  # the server goes on answering others
        assert closed and got < len(full.content)  # the answer was dropped, not delivered late
