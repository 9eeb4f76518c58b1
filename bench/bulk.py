"""The bulk path against the same checkpoint in process, in one run: series/s of `Model.predict` on a
table of N series, and of `POST /forecast` with the same series as one Arrow and one JSON request, sent
one after another to a `latentcast serve` on this machine (same torch threads, same latent samples).

    python -m bench.bulk [--model spirals] [--series 1000] [--samples 1] [--reps 15] [--tag _before]
    # writes bench/results/bulk{tag}.md and .json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import torch

import latentcast
from bench import results
from bench.http import make_series
from bench.server import ServerProcess
from latentcast import arrowio
from latentcast.service import Settings
from latentcast.service.formats import ModelSpec, arrow


def frames(series: list[dict[str, Any]], channels: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The series as the in-process API takes them: a long table of observations, one of query times."""
    obs, qs = [], []
    for s in series:
        for t, row in zip(s["timestamps"], s["values"], strict=True):
            obs.append({"id": s["id"], "time": t, **dict(zip(channels, row, strict=True))})
        qs += [{"id": s["id"], "time": t} for t in s["query_times"]]
    return pd.DataFrame(obs), pd.DataFrame(qs)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="spirals")
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--obs", type=int, default=20)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1, help="latent samples (server: LATENTCAST_NUM_SAMPLES)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    levels = [0.1, 0.5, 0.9]

    model = latentcast.load(args.model, device="cpu", num_samples=args.samples)
    bundle = model.bundle
    spec = ModelSpec(args.model, bundle.version, bundle.channels, model.limits, model.forecaster.solver)
    info = {"channels": list(model.channels), "time_scale": model.bundle.time.scale}
    series = make_series(info, args.series, args.obs, args.queries, seed=3)
    obs, queries = frames(series, model.channels)
    json_body = json.dumps({"model": args.model, "series": series, "quantiles": levels}).encode()
    arrow_body = arrowio.encode_series(series)
    env = {"LATENTCAST_NUM_SAMPLES": str(args.samples)}
    seconds: dict[str, list[float]] = {"solve": [], "in_process": [], "arrow": [], "json": []}
    timing: dict[str, list[str]] = {"arrow": [], "json": []}  # the server's account (Server-Timing)
    job = arrow.decode(arrow_body, {"model": args.model, "quantiles": "0.1,0.5,0.9"}, lambda _: spec, Settings())
    with ServerProcess(env, "cpu", timeout=180) as server, httpx.Client(timeout=120) as client:
        runs = {
            "solve": lambda: model.forecaster.predict_packed(job.packed, levels=tuple(levels)),
            "in_process": lambda: model.predict(obs, queries, quantiles=levels),
            "arrow": lambda: client.post(
                f"{server.url}/forecast?model={args.model}&quantiles=0.1,0.5,0.9",
                content=arrow_body,
                headers={"content-type": arrowio.MEDIA_TYPE, "accept": arrowio.MEDIA_TYPE},
            ).raise_for_status(),
            "json": lambda: client.post(
                f"{server.url}/forecast", content=json_body, headers={"content-type": "application/json"}
            ).raise_for_status(),
        }
        for run in runs.values():
            for _ in range(2):  # warm
                run()
        for _ in range(args.reps):  # in turn, so that each path sees the same machine
            for name, run in runs.items():
                t0 = time.perf_counter()
                out = run()
                seconds[name].append(time.perf_counter() - t0)
                if isinstance(out, httpx.Response):
                    timing[name].append(out.headers["server-timing"])
    per_s = {k: args.series / float(np.median(v)) for k, v in seconds.items()}
    r = {
        "device": results.machine("cpu"),
        "torch_threads": torch.get_num_threads(),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "arrow_bytes": len(arrow_body),
        "json_bytes": len(json_body),
        "seconds": seconds,
        "server_timing": timing,
        "series_per_s": per_s,
        "arrow_ratio": per_s["arrow"] / per_s["in_process"],
        "json_ratio": per_s["json"] / per_s["in_process"],
        "arrow_ratio_to_solve": per_s["arrow"] / per_s["solve"],
        "cpus": os.cpu_count(),
    }
    results.write(args.out, f"bulk{args.tag}", r, markdown(r))
    print((args.out / f"bulk{args.tag}.md").read_text())


def markdown(r: dict[str, Any]) -> str:
    a, per_s = r["args"], r["series_per_s"]
    lines = [
        f"# Bulk requests against the same checkpoint in process ({a['model']})",
        "",
        f"{r['device']}, {r['torch_threads']} torch threads; {a['series']} series of {a['obs']} observations and "
        f"{a['queries']} query times, {a['samples']} latent sample(s), quantiles 0.1/0.5/0.9; median of "
        f"{a['reps']}, the three paths in turn (`python -m bench.bulk`). Arrow body {r['arrow_bytes'] / 1e6:.2f} MB, "
        f"JSON {r['json_bytes'] / 1e6:.2f} MB.",
        "",
        "| path | median s | series/s | ÷ `Model.predict` | ÷ forecaster alone |",
        "|---|---|---|---|---|",
    ]
    paths = (
        ("solve", "the forecaster alone (`predict_packed` on the decoded series)"),
        ("in_process", "`Model.predict` (pandas in and out)"),
        ("arrow", "HTTP, Arrow"),
        ("json", "HTTP, JSON"),
    )
    for k, label in paths:
        med = float(np.median(r["seconds"][k]))
        ratios = f"{per_s[k] / per_s['in_process']:.2f} | {per_s[k] / per_s['solve']:.2f}"
        lines.append(f"| {label} | {med:.3f} | {per_s[k]:,.0f} | {ratios} |")
    lines += ["", f"Commit {r['commit']}, {r['date']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
