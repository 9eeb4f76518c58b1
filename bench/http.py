"""Load generator against a real `latentcast serve` on 127.0.0.1 (started here as a subprocess).

Three measurements, each bounded in request count and time:
  latency  sequential single-series requests: p50/p95/p99
  poisson  single-series requests with Poisson arrivals (open loop), rate stepped up until p99 > 100 ms
           (or the rate list ends), with micro-batching on and off
  bulk     requests of --bulk-series series each, JSON and Arrow bodies: series/s end to end, and as a
           fraction of the raw 32-sample solve at batch 1,024 (bench/results/solver_<device>.json)

Run: python -m bench.http [--modes latency,poisson,bulk] [--model pbcseq] [--device cpu]
Writes bench/results/http_<device>.json and .md (device name, date, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import results
from bench.server import ServerProcess
from latentcast import arrowio

ROOT = Path(__file__).resolve().parents[1]


def make_series(model: dict[str, Any], n: int, n_obs: int, n_query: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic series in the model's channels: n_obs irregular times, n_query query times after them."""
    rng = np.random.default_rng(seed)
    d = len(model["channels"])
    unit_scale = model["time_scale"]
    span = 1.0 / unit_scale  # one model-time unit, in the model's time unit
    out = []
    for i in range(n):
        t = np.sort(rng.uniform(0, 2 * span, n_obs))
        t = np.unique(np.round(t, 3))
        vals = rng.uniform(1.0, 2.0, (len(t), d))
        vals[rng.random(vals.shape) < 0.2] = np.nan
        vals[np.arange(len(t)), rng.integers(0, d, len(t))] = 1.5
        q = t[-1] + np.sort(rng.uniform(0, 2 * span, n_query))
        out.append(
            {
                "id": f"s{i}",
                "timestamps": t.tolist(),
                "values": [[None if np.isnan(v) else float(v) for v in row] for row in vals],
                "query_times": q.tolist(),
            }
        )
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else float("nan")


_TIMING = re.compile(r"(\w+);(?:dur|desc)=\"?([\d.]+)")
PHASES = ("read", "queue", "solve", "handback", "render")


class RawPool:
    """A minimal HTTP/1.1 client over keep-alive connections (asyncio streams): the load generator shares
    the machine with the server, so it should cost as little CPU per request as possible."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        status, data, _ = await self.post_timed(path, body, content_type)
        return status, data

    async def post_timed(
        self, path: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, bytes, dict[str, float]]:
        """Also the server's Server-Timing phases (ms; batch = series in the request's solve)."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in (0, 1):
            reused = bool(self.idle) and attempt == 0
            conn = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(head + body)
            line = await reader.readline()
            if not line:  # the server closed an idle keep-alive connection: retry on a fresh one
                writer.close()
                if reused:
                    continue
                raise ConnectionError("server closed the connection")
            status = int(line.split()[1])
            length = 0
            timing: dict[str, float] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                elif line[:14].lower() == b"server-timing:":
                    timing = {k: float(v) for k, v in _TIMING.findall(line[14:].decode())}
            data = await reader.readexactly(length)
            self.idle.append(conn)
            return status, data, timing
        raise ConnectionError("unreachable")

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def run_latency(url: str, bodies: list[bytes]) -> dict[str, float]:
    pool = RawPool(url)
    for b in bodies[:10]:  # warm the connection and the server
        await pool.post("/forecast", b)
    lat = []
    for b in bodies:
        t0 = time.perf_counter()
        status, data = await pool.post("/forecast", b)
        lat.append(time.perf_counter() - t0)
        assert status == 200, data[:300]
    await pool.close()
    return {
        "requests": len(bodies),
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "mean_ms": 1e3 * float(np.mean(lat)),
    }


async def run_poisson(url: str, bodies: list[bytes], rate: float, duration: float) -> dict[str, Any]:
    """Open loop: arrivals at exponential gaps regardless of answers (so queueing shows in latency)."""
    rng = np.random.default_rng(int(rate))
    n = min(len(bodies), max(20, int(rate * duration)))
    gaps = rng.exponential(1.0 / rate, n)
    lat: list[float] = []
    timings: list[dict[str, float]] = []
    errors = 0
    pool = RawPool(url)

    async def one(b: bytes) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            status, _, timing = await pool.post_timed("/forecast", b)
        except (OSError, asyncio.IncompleteReadError):
            status, timing = 0, {}
        if status == 200:
            lat.append(time.perf_counter() - t0)
            timings.append(timing)
        else:
            errors += 1

    tasks = []
    start = time.perf_counter()
    t_next = start
    for i in range(n):
        t_next += gaps[i]
        delay = t_next - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await pool.close()
    return {
        "rate": rate,
        "requests": n,
        "errors": errors,
        "throughput": len(lat) / elapsed,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "tail": tail_breakdown(lat, timings),
        "median": tail_breakdown(lat, timings, lo=45, hi=55),
    }


def tail_breakdown(
    lat: list[float], timings: list[dict[str, float]], lo: float = 99, hi: float = 100
) -> dict[str, float]:
    """Mean Server-Timing phases (ms) of the requests whose latency lies in percentiles [lo, hi]; `outside`
    is what the client saw beyond the handler (HTTP parsing, sockets, event-loop scheduling)."""
    if not lat or not timings[0]:
        return {}
    ms = np.asarray(lat) * 1e3
    a, b = np.percentile(ms, lo), np.percentile(ms, hi)
    sel = [t | {"latency": x} for x, t in zip(ms, timings, strict=True) if a <= x <= b]
    out = {k: float(np.mean([t.get(k, 0.0) for t in sel])) for k in (*PHASES, "batch", "captures", "latency")}
    out["outside"] = out["latency"] - sum(out[k] for k in PHASES)
    out["requests"] = len(sel)
    return out


async def run_bulk(url: str, path: str, body: bytes, content_type: str, n_series: int, reps: int) -> dict[str, Any]:
    pool = RawPool(url)
    status, data = await pool.post(path, body, content_type)
    assert status == 200, data[:300]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        status, data = await pool.post(path, body, content_type)
        times.append(time.perf_counter() - t0)
        assert status == 200, data[:300]
    await pool.close()
    best = float(np.median(times))
    return {
        "series_per_request": n_series,
        "body_mb": len(body) / 1e6,
        "response_mb": len(data) / 1e6,
        "seconds_median": best,
        "series_per_s": n_series / best,
    }


def scrape(url: str) -> dict[str, float]:
    """Stall counters from /metrics: GC pauses (count, total seconds, all generations) and CUDA graph captures."""
    out = {"gc_pauses": 0.0, "gc_seconds": 0.0, "graph_captures": 0.0}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("latentcast_gc_pause_seconds_count"):
            out["gc_pauses"] += float(line.split()[-1])
        elif line.startswith("latentcast_gc_pause_seconds_sum"):
            out["gc_seconds"] += float(line.split()[-1])
        elif line.startswith("latentcast_graph_captures_total"):
            out["graph_captures"] = float(line.split()[-1])
    return out


def raw_solver_fps(path: Path) -> float | None:
    """The 32-sample + quantiles row at batch 1,024 of a `bench.solver` result (what the service computes)."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["rows"]
    hit = [r for r in rows if r["batch"] == 1024 and "32 samples" in r["method"]]
    return float(hit[0]["fps"]) if hit else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="latency,poisson,bulk")
    ap.add_argument("--model", default="pbcseq")
    ap.add_argument("--models", default="", help="LATENTCAST_MODELS for the server (JSON list); default embedded")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--rates", default="10,20,40,80,160,320")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per Poisson rate (at least)")
    ap.add_argument(
        "--min-requests",
        type=int,
        default=300,
        help="requests per Poisson rate at least (so p99 is not the single worst of a few dozen)",
    )
    ap.add_argument("--bulk-series", type=int, default=1000)
    ap.add_argument("--bulk-reps", type=int, default=5)
    ap.add_argument("--bulk-formats", default="json,arrow", help="request bodies for the bulk mode")
    ap.add_argument("--solver-results", default="", help="bench.solver JSON for the raw rate (default: same device)")
    ap.add_argument("--obs", type=int, default=50)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    modes = args.modes.split(",")
    env = {"LATENTCAST_MODELS": args.models} if args.models else {}
    out: dict[str, Any] = {"model": args.model, "obs": args.obs, "queries": args.queries}
    configs = [("batching", {"LATENTCAST_BATCHING": "true"})]
    if "poisson" in modes:
        configs.append(("no batching", {"LATENTCAST_BATCHING": "false"}))
    for label, extra in configs:
        server = ServerProcess({**env, **extra}, args.device)
        try:
            info = next(m for m in httpx.get(f"{server.url}/models").json()["models"] if m["name"] == args.model)
            single = [
                json.dumps({"model": args.model, "series": [s], "quantiles": [0.1, 0.5, 0.9]}).encode()
                for s in make_series(info, 400, args.obs, args.queries, seed=1)
            ]
            res: dict[str, Any] = {}
            if "latency" in modes and label == "batching":
                res["latency"] = asyncio.run(run_latency(server.url, single[: args.latency_requests]))
                print(f"[{label}] latency: {res['latency']}", flush=True)
            if "poisson" in modes:
                res["poisson"] = []
                for rate in [float(r) for r in args.rates.split(",")]:
                    duration = max(args.duration, args.min_requests / rate)
                    bodies = [
                        json.dumps({"model": args.model, "series": [s], "quantiles": [0.1, 0.5, 0.9]}).encode()
                        for s in make_series(info, int(rate * duration) + 20, args.obs, args.queries, seed=int(rate))
                    ]
                    before = scrape(server.url)
                    row = asyncio.run(run_poisson(server.url, bodies, rate, duration))
                    after = scrape(server.url)
                    row["server"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                    res["poisson"].append(row)
                    print(f"[{label}] poisson {row}", flush=True)
                    if row["p99_ms"] > 100:
                        break
            if "bulk" in modes and label == "batching":
                series = make_series(info, args.bulk_series, args.obs, args.queries, seed=2)
                levels = [0.1, 0.5, 0.9]
                res["bulk"] = {}
                for fmt in args.bulk_formats.split(","):
                    if fmt == "json":
                        body = json.dumps({"model": args.model, "series": series, "quantiles": levels}).encode()
                        path, ctype = "/forecast", "application/json"
                    else:
                        body = arrowio.encode_series(series)
                        path, ctype = f"/forecast?model={args.model}&quantiles=0.1,0.5,0.9", arrowio.MEDIA_TYPE
                    row = asyncio.run(run_bulk(server.url, path, body, ctype, args.bulk_series, args.bulk_reps))
                    res["bulk"][fmt] = row
                    print(f"[{label}] bulk {fmt}: {row}", flush=True)
            out[label] = res
        finally:
            server.stop()
    dev = "gpu" if args.device.startswith("cuda") else "cpu"
    raw = raw_solver_fps(Path(args.solver_results or ROOT / "bench" / "results" / f"solver_{dev}.json"))
    out.update(
        raw_solver_fps=raw,
        device=results.machine(args.device),
        date=dt.date.today().isoformat(),
        commit=results.commit(),
        argv=sys.argv[1:],
    )
    name = f"http_{dev}{args.tag}"
    results.write(args.out, name, out, markdown(out))
    print(markdown(out))


def capacity(rows: list[dict[str, Any]], p99_ms: float) -> float:
    """Highest served rate among the rates whose p99 latency is within `p99_ms` (0 if none)."""
    return max((x["throughput"] for x in rows if x["p99_ms"] <= p99_ms and not x["errors"]), default=0.0)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# HTTP load: `latentcast serve`, model {r['model']}, on {r['device']}",
        "",
        f"{r['date']}, commit {r['commit']}; series of {r['obs']} observations and {r['queries']} query times.",
        f"Command: `python -m bench.http {' '.join(r['argv'])}`",
        "",
    ]
    b = r.get("batching", {})
    if "latency" in b:
        x = b["latency"]
        lines += [
            "## Sequential single-series requests",
            "",
            "| requests | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|",
            f"| {x['requests']} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | {x['p99_ms']:.1f} |",
            "",
        ]
    for label in ("batching", "no batching"):
        rows = r.get(label, {}).get("poisson")
        if rows:
            lines += [
                f"## Poisson arrivals, micro-batching {'on' if label == 'batching' else 'off'}",
                "",
                "| offered req/s | served req/s | p50 ms | p95 ms | p99 ms | errors |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {x['rate']:.0f} | {x['throughput']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | "
                f"{x['p99_ms']:.1f} | {x['errors']} |"
                for x in rows
            ]
            lines.append("")
            if any(x.get("tail") for x in rows):
                lines += [
                    "Where the slowest 1% of requests (≥ p99) spent their time, mean ms from Server-Timing, and "
                    "the server's stall counters over the run (GC pauses of all generations; CUDA graph captures):",
                    "",
                    "| offered req/s | latency | read | queue | solve | handback | render | outside | batch series "
                    "| GC pauses (s total) | captures |",
                    "|---|---|---|---|---|---|---|---|---|---|---|",
                ]
                for x in rows:
                    t, srv = x.get("tail") or {}, x.get("server", {})
                    if not t:
                        continue
                    cells = " | ".join(f"{t[k]:.1f}" for k in ("latency", *PHASES, "outside"))
                    lines.append(
                        f"| {x['rate']:.0f} | {cells} | {t['batch']:.0f} | {srv.get('gc_pauses', 0):.0f} "
                        f"({srv.get('gc_seconds', 0):.3f}) | {srv.get('graph_captures', 0):.0f} |"
                    )
                lines.append("")
    on, off = r.get("batching", {}).get("poisson"), r.get("no batching", {}).get("poisson")
    if on and off:
        lines += [
            "## Micro-batching at equal p99",
            "",
            "Most requests served per second at a rate whose p99 stays within the bound (rates are discrete, "
            "so each figure is a lower bound of the capacity at that bound):",
            "",
            "| p99 bound | batching on | batching off | on ÷ off |",
            "|---|---|---|---|",
        ]
        for bound in (50.0, 100.0):
            a, c = capacity(on, bound), capacity(off, bound)
            ratio = f"{a / c:.1f}×" if a and c else "—"
            lines.append(f"| {bound:.0f} ms | {a:.0f} req/s | {c:.0f} req/s | {ratio} |")
        lines.append("")
    if "bulk" in b:
        raw = r.get("raw_solver_fps")
        lines += [
            "## Bulk requests",
            "",
            "Raw solve, 32 samples + 3 quantiles at batch 1,024 (`bench.solver`, same device): "
            + (f"{raw:,.0f} forecasts/s." if raw else "not measured."),
            "",
            "| body | series per request | request MB | response MB | median s | series/s | ÷ raw solve |",
            "|---|---|---|---|---|---|---|",
        ]
        for fmt, x in b["bulk"].items():
            ratio = f"{x['series_per_s'] / raw:.0%}" if raw else "—"
            lines.append(
                f"| {fmt} | {x['series_per_request']} | {x['body_mb']:.2f} | {x['response_mb']:.2f} | "
                f"{x['seconds_median']:.3f} | {x['series_per_s']:.0f} | {ratio} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
