"""Where a bulk request's time goes in-process (no HTTP): parse, validate, model, forecast overhead, render,
for the JSON body and for the Arrow body.

Run: python -m bench.profile_bulk [--device cuda] [--series 1000] [--checkpoint runs/bench/anchor.pt]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.http import make_series
from service import arrow
from service.config import Settings
from service.main import tune_gc
from service.prepare import Job, prepare
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
    b = served.bundle
    info = {"channels": list(b.channels), "time_scale": b.time.scale}
    series = make_series(info, args.series, 50, 50, seed=2)
    json_body = json.dumps({"series": series, "quantiles": [0.1, 0.5, 0.9]}).encode()
    arrow_body = arrow.encode_series(series)
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

    def once(fmt: str) -> dict[str, float]:
        model_s[0] = 0.0
        t0 = time.perf_counter()
        if fmt == "json":
            req = parse_request(json_body)
            t1 = time.perf_counter()
            job = prepare(req, served.limits, settings)
            out_fn: Callable[[Job, Any], bytes] = lambda j, o: render(served, j, o)  # noqa: E731
        else:
            table = arrow.read_table(arrow_body)
            t1 = time.perf_counter()
            job = arrow.prepare_arrow(table, (0.1, 0.5, 0.9), 0, served.limits, settings)
            out_fn = lambda j, o: arrow.render_arrow(b.name, b.version, list(b.channels), j, j.echo, o)  # noqa: E731
        t2 = time.perf_counter()
        res = fc.predict_packed(job.packed, levels=job.levels)
        t3 = time.perf_counter()
        out_fn(job, res)
        t4 = time.perf_counter()
        return {
            "parse": t1 - t0,
            "prepare": t2 - t1,
            "model": model_s[0],
            "forecast_overhead": t3 - t2 - model_s[0],
            "render": t4 - t3,
            "total": t4 - t0,
        }

    tune_gc()  # as the server does after warm-up
    for fmt, size in (("json", len(json_body)), ("arrow", len(arrow_body))):
        once(fmt)
        runs = [once(fmt) for _ in range(args.reps)]
        med = {k: float(np.median([r[k] for r in runs])) * 1e3 for k in runs[0]}
        host = med["total"] - med["model"]
        print(f"{fmt}: {args.series} series on {args.device}, body {size / 1e6:.2f} MB; median ms:")
        print("  " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()) + f"; host (total - model) {host:.1f}")


if __name__ == "__main__":
    main()
