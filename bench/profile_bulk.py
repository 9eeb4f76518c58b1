"""Where a bulk request's time goes in-process (no HTTP): parse, validate, model, forecast overhead, render.

Run: python -m bench.profile_bulk [--device cuda] [--series 1000] [--checkpoint runs/bench/anchor.pt]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from bench.http import make_series
from service.config import Settings
from service.prepare import prepare
from service.registry import load_models
from service.routes import parse_request, render


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--checkpoint", default="runs/bench/anchor.pt")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    settings = Settings(models=[args.checkpoint])
    served = next(iter(load_models(settings, torch.device(args.device)).values()))
    info = {"channels": list(served.bundle.channels), "time_scale": served.bundle.time.scale}
    doc = {"series": make_series(info, args.series, 50, 50, seed=2), "quantiles": [0.1, 0.5, 0.9]}
    body = json.dumps(doc).encode()
    fc = served.forecaster
    inner = fc.model.predict
    model_s = [0.0]

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = inner(*a, **k)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        model_s[0] += time.perf_counter() - t0
        return out

    fc.model.predict = timed  # type: ignore[method-assign]

    def once() -> dict[str, float]:
        model_s[0] = 0.0
        t0 = time.perf_counter()
        req = parse_request(body)
        t1 = time.perf_counter()
        job = prepare(req, served.limits, settings)
        t2 = time.perf_counter()
        res = fc.predict(job.series, job.queries, levels=job.levels)
        t3 = time.perf_counter()
        render(served, job, res)
        t4 = time.perf_counter()
        return {
            "parse": t1 - t0,
            "prepare": t2 - t1,
            "model": model_s[0],
            "forecast_overhead": t3 - t2 - model_s[0],
            "render": t4 - t3,
            "total": t4 - t0,
        }

    once()
    runs = [once() for _ in range(args.reps)]
    med = {k: float(np.median([r[k] for r in runs])) * 1e3 for k in runs[0]}
    print(f"{args.series} series on {args.device}, body {len(body) / 1e6:.1f} MB; median ms:")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
