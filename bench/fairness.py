"""Fairness under load: one-series requests at a steady rate against a default `latentcast serve`, alone
and while maximal requests (each inside every limit) are sent back to back.

Maximal requests, each phase one kind, sent one after another for the phase's length:
  tolerance   10,000 spirals series at rtol 1e-7, atol 1e-9 (about 1 MB)
  samples     1,500 one-observation physionet2012 series with num_samples 256 (an answer of ~16M values)
  body        a JSON body just under LATENTCAST_MAX_BODY_BYTES (32 MiB) of real pbcseq visits
  long        one pbcseq series of 10,000 visits (its encoder walks 10,000 steps in one go), 3 at a time
Small: one pbcseq patient (3 visits, 2 query times), open loop at --rate per second from a thread pool.
Target: small p99 under 5× its idle p99, no small request failing, every maximal request answered
within its deadline or refused up front with a status that names the setting.

    python -m bench.fairness [--seconds 60] [--rate 20] [--phases tolerance,samples,body,long]
    # writes bench/results/fairness.md and .json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import results
from bench.server import ServerProcess
from bench.soak import patients
from latentcast.models.training.datasets.physionet2012 import CHANNELS as PHYSIONET

SMALL = json.dumps({"model": "pbcseq", "series": [dict(patients(1)[0], id="small")]}).encode()


def tolerance_body() -> bytes:
    rng = np.random.default_rng(0)
    series = [
        {"id": f"t{i}", "timestamps": [0.0, 0.4, 0.9], "values": rng.normal(0, 1, (3, 2)).round(3).tolist(),
         "query_times": [3.0, 6.0]}
        for i in range(10_000)
    ]  # fmt: skip
    return json.dumps({"model": "spirals", "series": series, "solver": {"rtol": 1e-7, "atol": 1e-9}}).encode()


def samples_body() -> bytes:
    row: list[float | None] = [None] * len(PHYSIONET)
    row[PHYSIONET.index("HR")] = 90.0
    series = [{"id": f"p{i}", "timestamps": [0.0], "values": [row], "query_times": [30.0]} for i in range(1500)]
    return json.dumps({"model": "physionet2012", "series": series, "num_samples": 256}).encode()


def big_body(limit: int = 32 * 2**20) -> bytes:
    visits = [v for p in patients(312) for v in p["values"]]
    series, size, i = [], 64, 0
    while True:
        s = {
            "id": f"b{i}",
            "timestamps": [float(k) for k in range(1000)],
            "values": [visits[(i * 1000 + k) % len(visits)] for k in range(1000)],
            "query_times": [1001.0],
        }
        size += len(json.dumps(s)) + 2
        if size > limit:
            break
        series.append(s)
        i += 1
    return json.dumps({"model": "pbcseq", "series": series}).encode()


def long_body(n: int = 10_000) -> bytes:
    visits = [v for p in patients(312) for v in p["values"]]
    values = [visits[k % len(visits)] for k in range(n)]  # the real visits, repeated
    series = {"id": "long", "timestamps": [float(k) for k in range(n)], "values": values, "query_times": [n + 30.0]}
    return json.dumps({"model": "pbcseq", "series": [series]}).encode()


# maximal requests of a kind in flight at once (the rest one at a time)
AT_ONCE = {"long": 3}


def post(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    try:
        r = httpx.post(f"{url}/forecast", content=body, headers={"content-type": "application/json"}, timeout=timeout)
        detail = "" if r.status_code == 200 else str(r.json().get("detail", ""))[:200]
        return r.status_code, time.perf_counter() - t0, detail
    except httpx.HTTPError as exc:
        return -1, time.perf_counter() - t0, type(exc).__name__


def phase(url: str, seconds: float, rate: float, heavy: bytes | None, at_once: int = 1) -> dict[str, Any]:
    """Small requests at `rate`/s for `seconds`, with `heavy` sent back to back (`at_once` in flight)."""
    stop = threading.Event()
    heavy_out: list[tuple[int, float, str]] = []

    def hammer() -> None:
        while not stop.is_set() and heavy is not None:
            heavy_out.append(post(url, heavy, timeout=60.0))

    movers = [threading.Thread(target=hammer, daemon=True) for _ in range(at_once)]
    for mover in movers:
        mover.start()
    time.sleep(0.5 if heavy is not None else 0.0)  # the first maximal request is in
    start = time.perf_counter()
    futures = []
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        k = 0
        while (due := start + k / rate) < start + seconds:
            time.sleep(max(0.0, due - time.perf_counter()))
            futures.append(pool.submit(post, url, SMALL, 30.0))
            k += 1
        small = [f.result() for f in futures]
    stop.set()
    for mover in movers:
        mover.join(120)
    lat = np.array([s[1] for s in small if s[0] == 200]) * 1e3
    return {
        "small_sent": len(small),
        "small_failed": sum(s[0] != 200 for s in small),
        "small_statuses": sorted({s[0] for s in small}),
        "small_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "small_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "heavy": [{"status": s, "seconds": round(t, 2), "detail": d} for s, t, d in heavy_out],
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--phases", default="tolerance,samples,body,long", help="maximal kinds to run (idle always runs)")
    args = ap.parse_args()
    makers = {"tolerance": tolerance_body, "samples": samples_body, "body": big_body, "long": long_body}
    bodies = {name: makers[name]() for name in args.phases.split(",")}
    rows: dict[str, Any] = {}
    with ServerProcess({}, "cpu", timeout=180) as server:
        for _ in range(20):  # warm: the first requests of a process pay one-off costs
            post(server.url, SMALL)
        rows["idle"] = phase(server.url, args.seconds, args.rate, None)
        for name, body in bodies.items():
            rows[name] = phase(server.url, args.seconds, args.rate, body, AT_ONCE.get(name, 1))
            rows[name]["heavy_bytes"] = len(body)
            print(name, {k: v for k, v in rows[name].items() if k != "heavy"}, flush=True)
        metrics = httpx.get(f"{server.url}/metrics").text
    scheduled = [line for line in metrics.splitlines() if line.startswith("latentcast_scheduled_requests_total")]
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": args.seconds,
        "rate": args.rate,
        "phases": rows,
        "scheduled": scheduled,
    }
    results.write(args.out, "fairness", r, markdown(r))
    print((args.out / "fairness.md").read_text())


def markdown(r: dict[str, Any]) -> str:
    idle = r["phases"]["idle"]["small_p99_ms"]
    lines = [
        "# Fairness: one-series requests while maximal ones run",
        "",
        f"A default `latentcast serve` on {r['device']}; one-series pbcseq requests at {r['rate']:g}/s (open loop)",
        f"for {r['seconds']:g} s per phase, alone and beside maximal requests of one kind sent back to back",
        "(`python -m bench.fairness`, module docstring). Target: small p99 under 5× idle, no small failure,",
        "each maximal request answered within its deadline or refused up front naming the setting.",
        "",
        "| phase | small sent | failed | p50 ms | p99 ms | p99 / idle p99 | maximal: status × count (seconds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in r["phases"].items():
        counts: dict[int, list[float]] = {}
        for h in x["heavy"]:
            counts.setdefault(h["status"], []).append(h["seconds"])
        heavy = ", ".join(f"{s} × {len(t)} ({min(t):.1f}–{max(t):.1f} s)" for s, t in sorted(counts.items())) or "—"
        lines.append(
            f"| {name} | {x['small_sent']} | {x['small_failed']} | {x['small_p50_ms']:.1f} | {x['small_p99_ms']:.1f} "
            f"| {x['small_p99_ms'] / idle:.2f}× | {heavy} |"
        )
    details = {h["detail"] for x in r["phases"].values() for h in x["heavy"] if h["detail"]}
    if details:
        lines += ["", "What the maximal requests were told:", ""] + [f"- {d}" for d in sorted(details)]
    lines += ["", "Scheduler counters at the end:", "", "```", *r["scheduled"], "```", ""]
    lines += [f"Commit {r['commit']}, {r['date']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
