"""The largest answer and the peak memory that legal requests can cause under the default settings,
computed from the limits and measured against a real `latentcast serve` (embedded pbcseq model).

Each case starts a fresh server (peak RSS is the process's high-water mark, VmHWM) and sends the
largest request of its kind that the limits allow:
  json answer    the most query times whose JSON answer stays within the answer limits
  arrow answer   the same, answered as an Arrow stream
  json body      a body just under LATENTCAST_MAX_BODY_BYTES of real patients' visits
  two at once    two of the largest JSON answers concurrently (LATENTCAST_MAX_HEAVY_REQUESTS = 2)

Run: python -m bench.limits; writes bench/results/limits.md and .json.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import results
from bench.server import ServerProcess
from bench.soak import patients
from latentcast.models import Limits, PackedSeries, TimeSpec
from latentcast.models.training.datasets.pbcseq import CHANNELS
from latentcast.service import Settings
from latentcast.service.formats import Echo, Job, ModelSpec, arrow
from latentcast.service.formats import json as json_format

ROOT = Path(__file__).resolve().parents[1]
D, LEVELS = len(CHANNELS), (0.1, 0.5, 0.9)


def peak_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _job(n_series: int, per_series: int) -> Job:
    """A job shaped like `request(n_series, per_series)`: the same ids and the model's channel names."""
    ids = [p["id"] for p in patients(n_series)]
    packed = PackedSeries(
        ids=ids,
        times=np.zeros(n_series),
        values=np.ones((n_series, D), np.float32),
        offsets=np.arange(n_series + 1),
        queries=np.zeros(n_series * per_series),
        query_offsets=np.arange(n_series + 1) * per_series,
    )
    spec = ModelSpec("pbcseq", "v", CHANNELS, Limits(TimeSpec("day", 1.0)))
    return Job(spec, packed, Echo(packed.query_offsets), LEVELS, 0)


def largest(fmt: Any, s: Settings) -> tuple[int, int]:
    """The most series of max_query_times query times each that pass every answer limit, and the bound."""
    per = s.max_query_times
    lo, hi = 1, s.max_series
    while lo < hi:
        mid = (lo + hi + 1) // 2
        job = _job(mid, per)
        ok = job.answer_values <= s.max_response_values and fmt.answer_bytes(job) <= s.max_response_bytes
        ok = ok and mid * per <= s.max_total_points
        lo, hi = (mid, hi) if ok else (lo, mid - 1)
    return lo, fmt.answer_bytes(_job(lo, per))


def request(n_series: int, per: int) -> bytes:
    base = patients(n_series)
    for p in base:
        last = p["timestamps"][-1]
        p["query_times"] = [last + 1.0 + 0.5 * k for k in range(per)]
    return json.dumps({"model": "pbcseq", "series": base}).encode()


def measure(name: str, send: Any) -> dict[str, Any]:
    with ServerProcess({"LATENTCAST_REQUEST_TIMEOUT_S": "600"}, "cpu") as srv:
        idle_rss, _ = peak_mb(srv.proc.pid)
        t0 = time.perf_counter()
        sizes = send(srv.url)
        seconds = time.perf_counter() - t0
        _, hwm = peak_mb(srv.proc.pid)
    return {"case": name, "idle_rss_mb": idle_rss, "peak_rss_mb": hwm, "answer_bytes": sizes, "seconds": seconds}


def main() -> None:
    s = Settings()
    n_json, bound_json = largest(json_format, s)
    n_arrow, bound_arrow = largest(arrow, s)
    per = s.max_query_times
    body_json = request(n_json, per)
    body_arrow = request(n_arrow, per)

    def post(url: str, body: bytes, accept: str = "application/json") -> int:
        r = httpx.post(
            f"{url}/forecast", content=body, headers={"content-type": "application/json", "accept": accept}, timeout=900
        )
        assert r.status_code == 200, r.text[:300]
        return len(r.content)

    # a body just under the limit: series of 1,000 daily visits (real patients' values, cycled)
    visits = [row for p in patients(312) for row in p["values"]]

    def long_series(i: int) -> dict[str, Any]:
        rows = [visits[(i * 1000 + k) % len(visits)] for k in range(1000)]
        return {"id": f"s{i}", "timestamps": [float(k) for k in range(1000)], "values": rows, "query_times": [1001.0]}

    big: list[dict[str, Any]] = []
    size = 64
    while len(big) < s.max_series:
        nxt = long_series(len(big))
        size += len(json.dumps(nxt)) + 2
        if size > s.max_body_bytes:
            break
        big.append(nxt)
    body_big = json.dumps({"model": "pbcseq", "series": big}).encode()
    assert len(body_big) <= s.max_body_bytes
    cases = [
        measure("json answer", lambda url: post(url, body_json)),
        measure("arrow answer", lambda url: post(url, body_arrow, arrow.MEDIA_TYPE)),
        measure("json body", lambda url: post(url, body_big)),
    ]

    def two(url: str) -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda _: post(url, body_json), range(2)))

    cases.append(measure("two json answers at once", two))
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            k: getattr(s, k)
            for k in (
                "max_response_values",
                "max_response_bytes",
                "max_body_bytes",
                "max_query_times",
                "max_series",
                "max_total_points",
                "max_heavy_requests",
                "max_solve_values",
            )
        },
        "largest": {
            "json": {
                "series": n_json,
                "query_times": n_json * per,
                "bound_bytes": bound_json,
                "request_bytes": len(body_json),
            },
            "arrow": {
                "series": n_arrow,
                "query_times": n_arrow * per,
                "bound_bytes": bound_arrow,
                "request_bytes": len(body_arrow),
            },
            "json_body": {"series": len(big), "points": 1001 * len(big), "request_bytes": len(body_big)},
        },
        "cases": cases,
    }
    results.write(ROOT / "bench" / "results", "limits", r, markdown(r))
    print(markdown(r))


def markdown(r: dict[str, Any]) -> str:
    s, big = r["settings"], r["largest"]
    lines = [
        "# The largest answer and peak memory a legal request can cause (default settings)",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}; `latentcast serve` with the embedded pbcseq model",
        "(7 channels), default quantiles (3 levels), no samples, a fresh server per case.",
        "",
        f"**Computed.** An answer holds at most LATENTCAST_MAX_RESPONSE_VALUES = {s['max_response_values']:,} numbers",
        f"and, by each format's upper bound known before solving, LATENTCAST_MAX_RESPONSE_BYTES = "
        f"{s['max_response_bytes']:,} bytes. With {s['max_query_times']:,} query times per series, the largest JSON",
        f"answer allowed is {big['json']['series']} series ({big['json']['query_times']:,} query times, bound "
        f"{big['json']['bound_bytes'] / 2**20:.0f} MiB); the largest Arrow answer {big['arrow']['series']} series "
        f"(bound {big['arrow']['bound_bytes'] / 2**20:.0f} MiB). Solves hold at most LATENTCAST_MAX_SOLVE_VALUES = "
        f"{s['max_solve_values']:,} values at a time whatever the request's size, and at most "
        f"LATENTCAST_MAX_HEAVY_REQUESTS = {s['max_heavy_requests']} large bodies are decoded or encoded at once. "
        f"The largest JSON body: {big['json_body']['series']} series of 1,000 observations "
        f"({big['json_body']['request_bytes'] / 2**20:.1f} MiB; LATENTCAST_MAX_BODY_BYTES = {s['max_body_bytes']:,}).",
        "",
        "**Measured.**",
        "",
        "| case | request | answer | server RSS idle → peak | time |",
        "|---|---|---|---|---|",
    ]
    req = {
        "json answer": big["json"]["request_bytes"],
        "arrow answer": big["arrow"]["request_bytes"],
        "json body": big["json_body"]["request_bytes"],
        "two json answers at once": 2 * big["json"]["request_bytes"],
    }
    for c in r["cases"]:
        ans = c["answer_bytes"] if isinstance(c["answer_bytes"], int) else sum(c["answer_bytes"])
        lines.append(
            f"| {c['case']} | {req[c['case']] / 2**20:.1f} MiB | {ans / 2**20:.1f} MiB | "
            f"{c['idle_rss_mb']:.0f} → {c['peak_rss_mb']:.0f} MB | {c['seconds']:.1f} s |"
        )
    lines += ["", "Reproduce: `python -m bench.limits`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
