"""Soak and fault test against a real `latentcast serve` on 127.0.0.1 (bounded in time, loopback only).

1. Capacity: closed-loop single-series requests from `--clients` connections for `--probe-s` seconds.
2. Soak: `--minutes` of Poisson arrivals at `--load` × capacity, mixed: good single-series requests,
   hostile ones (malformed, out-of-range, oversized: each must get its 4xx), poison ones (timestamps
   0 and 1e308, which once failed whole micro-batches), and a few slow clients that trickle headers
   or bodies. Per minute: good requests' p50/p99 and errors; the server's RSS every 10 s.
3. SIGTERM under load: the same traffic plus stalled uploads, SIGTERM after a few seconds; requests in
   flight at that moment must all succeed, and the server must exit within its grace period.

Run: python -m bench.soak [--minutes 10]; writes bench/results/soak.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench import results
from bench.http import RawPool, pct
from bench.server import ServerProcess
from latentcast.models.training.datasets.pbcseq import CHANNELS, read_pbcseq

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def patients(n: int) -> list[dict[str, Any]]:
    """n real pbcseq patients (the default model's data; past the 312 there are, they repeat under new
    ids), each: its first 10 visits, 3 query times after them."""
    frame = read_pbcseq()
    base = []
    for pid, g in frame.groupby("id"):
        g = g.head(10)
        days = g["time"].to_numpy(dtype=float)
        vals = [[None if pd.isna(v) else float(v) for v in row] for row in g[list(CHANNELS)].to_numpy()]
        queries = [days[-1] + q for q in (30.0, 180.0, 365.0)]
        base.append({"id": f"p{pid}", "timestamps": days.tolist(), "values": vals, "query_times": queries})
    return [
        dict(base[i % len(base)], id=f"{base[i % len(base)]['id']}" + (f"-{i // len(base)}" if i >= len(base) else ""))
        for i in range(n)
    ]


def bodies(info: dict[str, Any]) -> tuple[list[bytes], list[tuple[bytes, int]], bytes]:
    """Good single-series bodies; hostile bodies with the status each must get; a poison body."""
    assert info["channels"] == list(CHANNELS), "the soak sends pbcseq patients: serve the pbcseq model"
    good = [json.dumps({"series": [p]}).encode() for p in patients(200)]
    s = patients(1)[0]
    d = len(info["channels"])

    def with_(**kw: Any) -> bytes:
        return json.dumps({"series": [{**s, **kw}]}).encode()

    hostile = [
        (b"[1, 2]", 400),
        (b"{", 400),
        (with_(timestamps=["now"] * len(s["timestamps"])), 422),
        (with_(values=[[1e39] * d] * len(s["timestamps"])), 422),
        (with_(values=[[1.0] * (d + 1)] * len(s["timestamps"])), 422),
        (json.dumps({"series": [s], "quantiles": [0.5] * 1000}).encode(), 422),
        (json.dumps({"series": [{**s, "query_times": list(range(2000))}] * 30, "num_samples": 256}).encode(), 413),
    ]
    poison = with_(timestamps=[0.0] + [1e308] * (len(s["timestamps"]) - 1))
    return good, hostile, poison


async def capacity(url: str, good: list[bytes], clients: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def client(k: int) -> None:
        nonlocal done
        pool = RawPool(url)
        i = k
        while time.monotonic() < stop:
            status, _ = await pool.post("/forecast", good[i % len(good)])
            assert status == 200
            done += 1
            i += clients
        await pool.close()

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return done / (time.monotonic() - t0)


async def slow_client(port: int, stop: float, mode: str) -> int:
    """Keeps a connection busy the slow way (headers or a body a byte at a time) until the server closes
    it, then reconnects; returns how many times the server closed it."""
    closed = 0
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = b"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n" if mode == "body" else b""
            writer.write(head + (b"GET /healthz HTTP/1.1\r\n" if mode == "headers" else b""))
            while time.monotonic() < stop:
                writer.write(b"x" if mode == "body" else b"X-A: b\r\n")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(100), 1.0) == b"":
                        break
                    break  # the server answered (408): it closed the slot
                except TimeoutError:
                    continue
            closed += 1
            writer.close()
        except OSError:
            await asyncio.sleep(0.5)
    return closed


async def traffic(
    url: str,
    good: list[bytes],
    hostile: list[tuple[bytes, int]],
    poison: bytes,
    rate: float,
    seconds: float,
    on_good: Any,
    hostile_every: int = 20,
    poison_every: int = 50,
) -> dict[str, int]:
    """Poisson arrivals at `rate` for `seconds`; every hostile_every-th request hostile, every
    poison_every-th poison. on_good(t_end, latency, ok) records good requests."""
    pools = [RawPool(url) for _ in range(64)]
    free = list(pools)
    counts = {"good": 0, "hostile": 0, "hostile_wrong": 0, "poison": 0, "poison_wrong": 0, "client_errors": 0}
    rng = np.random.default_rng(0)
    tasks: set[asyncio.Task[None]] = set()

    async def one(k: int) -> None:
        pool = free.pop() if free else RawPool(url)
        try:
            if k % poison_every == poison_every - 1:
                status, _ = await pool.post("/forecast", poison)
                counts["poison"] += 1
                counts["poison_wrong"] += status != 422
            elif k % hostile_every == hostile_every - 1:
                body, want = hostile[(k // hostile_every) % len(hostile)]
                status, _ = await pool.post("/forecast", body)
                counts["hostile"] += 1
                counts["hostile_wrong"] += status != want
            else:
                t0 = time.perf_counter()
                try:
                    status, _ = await pool.post("/forecast", good[k % len(good)])
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    status = 0
                on_good(time.monotonic(), time.perf_counter() - t0, status == 200)
                counts["good"] += 1
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            counts["client_errors"] += 1
            pool = RawPool(url)
        free.append(pool)

    start = time.monotonic()
    k, t_next = 0, start
    while t_next < start + seconds:
        await asyncio.sleep(max(0.0, t_next - time.monotonic()))
        task = asyncio.create_task(one(k))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
        t_next += rng.exponential(1.0 / rate)
    await asyncio.gather(*tasks)
    for p in free:
        await p.close()
    return counts


async def soak(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    info = next(m for m in httpx.get(f"{srv.url}/models").json()["models"] if m["default"])
    good, hostile, poison = bodies(info)
    cap = await capacity(srv.url, good, args.clients, args.probe_s)
    rate = args.load * cap
    start = time.monotonic()
    minutes: dict[int, list[tuple[float, bool]]] = {}

    def on_good(t_end: float, latency: float, ok: bool) -> None:
        minutes.setdefault(int((t_end - start) // 60), []).append((latency, ok))

    rss: list[tuple[float, float]] = []

    async def watch() -> None:
        while time.monotonic() < start + args.minutes * 60:
            rss.append((time.monotonic() - start, rss_mb(srv.proc.pid)))
            await asyncio.sleep(10)

    stop = start + args.minutes * 60
    slow = [slow_client(srv.port, stop, mode) for mode in ("headers", "body", "headers", "body")]
    outcome = await asyncio.gather(
        traffic(srv.url, good, hostile, poison, rate, args.minutes * 60, on_good), watch(), *slow
    )
    counts, slow_closed = outcome[0], outcome[2:]
    per_minute = [
        {
            "minute": m + 1,
            "good": len(v),
            "errors": sum(not ok for _, ok in v),
            "p50_ms": pct([lat for lat, _ in v], 50),
            "p99_ms": pct([lat for lat, _ in v], 99),
        }
        for m, v in sorted(minutes.items())
        if m < args.minutes
    ]
    warm = next((r for t, r in rss if t >= 60), rss[0][1] if rss else float("nan"))
    return {
        "capacity_rps": cap,
        "rate_rps": rate,
        "counts": counts,
        "slow_clients_closed": list(slow_closed),
        "per_minute": per_minute,
        "good_errors": sum(m["errors"] for m in per_minute),
        "rss_mb": rss,
        "rss_after_warmup_mb": warm,
        "rss_end_mb": rss[-1][1] if rss else float("nan"),
        "rss_growth": (rss[-1][1] - warm) / warm if rss else float("nan"),
    }


async def sigterm(srv: ServerProcess, rate: float, grace: float) -> dict[str, Any]:
    """Load, stalled uploads, then SIGTERM: every request in flight at that moment must get its 200."""
    info = next(m for m in httpx.get(f"{srv.url}/models").json()["models"] if m["default"])
    good, _, _ = bodies(info)
    stalled = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(
            b"POST /forecast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 999\r\n\r\n{"
        )
        stalled.append(s)
    inflight: dict[int, str] = {}
    sent_at_signal: set[int] = set()
    signalled = asyncio.Event()

    async def one(k: int) -> None:
        """One request on its own connection; in flight once its bytes are written."""
        body = good[k % len(good)]
        head = (
            "POST /forecast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        except OSError:
            return  # refused: the server had stopped listening; never in flight
        try:
            writer.write(head.encode() + body)
            await writer.drain()
            inflight[k] = "sent"
            line = await reader.readline()
            inflight[k] = line.split()[1].decode() if line else "closed without an answer"
        except (ConnectionError, OSError, IndexError) as exc:
            inflight[k] = type(exc).__name__
        writer.close()

    tasks = []
    k = 0
    t_end = time.monotonic() + 8.0
    rng = np.random.default_rng(1)
    while time.monotonic() < t_end:
        if not signalled.is_set() and time.monotonic() > t_end - 5.0:
            sent_at_signal = {i for i, v in inflight.items() if v == "sent"}
            t_sig = time.monotonic()
            os.kill(srv.proc.pid, signal.SIGTERM)
            signalled.set()
            break
        tasks.append(asyncio.create_task(one(k)))
        k += 1
        await asyncio.sleep(rng.exponential(1.0 / rate))
    await asyncio.gather(*tasks)
    code = await asyncio.to_thread(srv.proc.wait, grace + 30)
    exit_s = time.monotonic() - t_sig
    for s in stalled:
        s.close()
    failed = [i for i in sent_at_signal if inflight[i] != "200"]
    return {
        "in_flight_at_sigterm": len(sent_at_signal),
        "in_flight_failed": len(failed),
        "requests_before_sigterm": k,
        "exit_seconds": exit_s,
        "exit_code": code,
        "grace_s": grace,
        "stalled_uploads": len(stalled),
    }


def markdown(r: dict[str, Any]) -> str:
    s, t = r["soak"], r["sigterm"]
    c = s["counts"]
    lines = [
        "# Soak and SIGTERM under load",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}; `latentcast serve` (embedded pbcseq model) and",
        "the load generator share the machine, on 127.0.0.1. Good requests are real pbcseq patients.",
        "",
        f"Capacity (closed loop, {r['clients']} connections, single-series requests): "
        f"**{s['capacity_rps']:.1f} req/s**; soak at {r['load']:.0%} of it, {s['rate_rps']:.1f} req/s Poisson, for "
        f"{r['minutes']} minutes: {c['good']} good, {c['hostile']} hostile ({c['hostile_wrong']} with a status other "
        f"than the one expected), {c['poison']} poison ({c['poison_wrong']} not 422), and 4 slow clients (closed "
        f"{sum(s['slow_clients_closed'])} times).",
        "",
        f"**Errors among good requests: {s['good_errors']}.** RSS after warm-up {s['rss_after_warmup_mb']:.0f} MB, "
        f"at the end {s['rss_end_mb']:.0f} MB (**{100 * s['rss_growth']:+.1f}%**).",
        "",
        "| minute | good requests | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        *[
            f"| {m['minute']} | {m['good']} | {m['errors']} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} |"
            for m in s["per_minute"]
        ],
        "",
        f"**SIGTERM under load** ({t['stalled_uploads']} stalled uploads open): {t['in_flight_at_sigterm']} "
        f"requests in flight at the signal, **{t['in_flight_failed']} failed**; the server exited after "
        f"**{t['exit_seconds']:.1f} s** (grace {t['grace_s']:g} s; exit status {t['exit_code']}: uvicorn re-raises "
        "the SIGTERM it handled).",
        "",
        f"Reproduce: `python -m bench.soak --minutes {r['minutes']:g}`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--probe-s", type=float, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    env = {"LATENTCAST_HEADER_TIMEOUT_S": "5", "LATENTCAST_BODY_TIMEOUT_S": "10"}
    with ServerProcess(env, "cpu") as srv:
        soaked = asyncio.run(soak(srv, args))
    with ServerProcess(env, "cpu") as srv:
        grace = 20.0
        ended = asyncio.run(sigterm(srv, soaked["rate_rps"], grace))
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "minutes": args.minutes,
        "load": args.load,
        "clients": args.clients,
        "soak": soaked,
        "sigterm": ended,
    }
    results.write(args.out, "soak", r, markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
