"""Where a bulk request's time goes in-process (no HTTP): parse, validate, model, forecast overhead, render,
for the JSON body and for the Arrow body.

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
from latentcast import arrowio
from latentcast.service import Settings, load_models, tune_gc
from latentcast.service.formats import arrow, outcome
from latentcast.service.formats import json as json_format


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
    info: dict[str, Any] = {"channels": list(b.channels), "time_scale": b.time.scale}
    series = make_series(info, args.series, 50, 50, seed=2)
    json_body = json.dumps({"series": series, "quantiles": [0.1, 0.5, 0.9]}).encode()
    arrow_body = arrowio.encode_series(series)
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
        """One request's phases. parse: the body alone (pydantic, or the Arrow stream); prepare: the rest
        of decoding (flatten and validate), i.e. the format's decode minus its parse."""
        model_s[0] = 0.0
        codec, body = (json_format, json_body) if fmt == "json" else (arrow, arrow_body)
        params = {} if fmt == "json" else {"quantiles": "0.1,0.5,0.9"}
        t0 = time.perf_counter()
        json_format.document(json_body) if fmt == "json" else arrowio.read_stream(arrow_body)
        t1 = time.perf_counter()
        job = codec.decode(body, params, lambda name: served.spec, settings)
        t2 = time.perf_counter()
        res = fc.predict_packed(job.packed, levels=job.levels)
        t3 = time.perf_counter()
        codec.encode(job, outcome(job, res, float("inf")))
        t4 = time.perf_counter()
        return {
            "parse": t1 - t0,
            "prepare": t2 - t1 - (t1 - t0),
            "model": model_s[0],
            "forecast_overhead": t3 - t2 - model_s[0],
            "render": t4 - t3,
            "total": t4 - t0 - (t1 - t0),
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
