"""The PhysioNet 2012 test split through a default `latentcast serve`: every record's t < 24 h as a long
table, its t ≥ 24 h observation times as the queries, posted by the client in requests of 200 records
(Arrow bodies, the default on_error: one refused record would fail its whole request), scored like the
in-process forecasts of the same model on the same records.

    python -m bench.physionet_served [--checkpoint runs/physionet2012/seed0/best.pt] [--chunk 200]

Without --checkpoint the server runs with no LATENTCAST_* setting at all: the embedded models.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import results
from bench.physionet import Scale, score, targets
from bench.server import ServerProcess
from latentcast.client import LatentcastClient, LatentcastError
from latentcast.frames import LatentcastWarning
from latentcast.models import ModelBundle
from latentcast.models.training import build_experiment, load_dataset
from latentcast.models.training.datasets import DatasetSplit


def served(checkpoint: Path | None, split: DatasetSplit, scale: Scale, chunk: int = 200) -> dict[str, Any]:
    """Serve `checkpoint` (None: the embedded models, no settings), post the test split, score it."""
    series, queries = targets(split.test)
    channels = list(split.channels)
    hours = 1.0 / split.time.scale  # model time → hours, the served model's unit
    obs = pd.concat(
        [
            pd.DataFrame(s.values[: s.n_context], columns=channels).assign(id=s.id, time=s.times[: s.n_context] * hours)
            for s in series
        ]
    )
    query = pd.DataFrame(
        {"id": np.repeat([s.id for s in series], [len(q) for q in queries]), "time": np.concatenate(queries) * hours}
    )
    env = {} if checkpoint is None else {"LATENTCAST_MODELS": json.dumps([str(checkpoint)])}
    statuses: dict[int, int] = {}
    with ServerProcess(env=env) as server, LatentcastClient(server.url, timeout=600, chunk_series=chunk) as client:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LatentcastWarning)  # counted below
                fc = client.forecast(obs, query, model="physionet2012", quantiles=(0.1, 0.9))
            statuses[200] = -(-len(series) // chunk)
        except LatentcastError as exc:
            statuses[exc.status] = 1
            return {"statuses": statuses, "error": exc.detail, "records": len(series)}
        seconds = time.perf_counter() - t0
    mean = fc.pivot_table(index=["id", "time"], columns="channel", values="mean")[channels]
    preds = [mean.loc[s.id].loc[q * hours].to_numpy() for s, q in zip(series, queries, strict=True)]
    out = score(series, preds, scale)
    kinds: dict[str, int] = {}
    for w in fc.attrs["warnings"]:
        kinds[w["kind"]] = kinds.get(w["kind"], 0) + 1
    warned = len({w["id"] for w in fc.attrs["warnings"] if w.get("id") is not None})
    out.update(
        seconds=seconds,
        records=len(series),
        answered=int(fc["id"].nunique()),
        statuses=statuses,
        requests=-(-len(series) // chunk),
        refused=len(fc.attrs["errors"]),
        warnings=kinds,
        records_with_warnings=warned,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.physionet_served", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="a checkpoint to serve (default: the embedded models)")
    ap.add_argument("--data", default="physionet2012", help="physionet2012[:PATH]")
    ap.add_argument("--chunk", type=int, default=200, help="records per request")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    from bench.evaluate_physionet import forecast_test

    split = load_dataset(build_experiment("physionet2012", data={"name": args.data}).data)
    scale = Scale.fit(split)
    r = served(args.checkpoint, split, scale, args.chunk)
    local = forecast_test(
        args.checkpoint or next(p for p in ModelBundle.embedded() if p.stem == "physionet2012"), split, scale, "cpu"
    )
    r["in_process_mse"] = local["mse"]
    if "mse" in r:
        r["relative_difference"] = abs(r["mse"] - local["mse"]) / local["mse"]
    r.update(device=results.machine("cpu"), commit=results.commit(), date=time.strftime("%Y-%m-%d"))
    results.write(args.out, "physionet2012_served", r, markdown(r, args.checkpoint))
    print((args.out / "physionet2012_served.md").read_text())


def markdown(r: dict[str, Any], checkpoint: Path | None) -> str:
    what = f"`{checkpoint}`" if checkpoint else "the embedded `physionet2012` model, no `LATENTCAST_*` setting"
    lines = ["# PhysioNet 2012 test split through a default `latentcast serve`", "", f"Served: {what}.", ""]
    if "mse" not in r:
        lines += [f"**Refused**: {r['statuses']} — {r['error']}", ""]
        return "\n".join(lines)
    lines += [
        "| records | requests (200 records each) | answered 200 | refused | records with a warning | warnings |",
        "|---|---|---|---|---|---|",
        f"| {r['records']:,} | {r['requests']} | {r['statuses'].get(200, 0)} requests, {r['answered']:,} records "
        f"| {r['refused']} | {r['records_with_warnings']} | "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["warnings"].items()))
        + " |",
        "",
        f"MSE {r['mse'] * 1e3:.4f} ×10⁻³ served against {r['in_process_mse'] * 1e3:.4f} in process (relative "
        f"difference {r['relative_difference']:.1e}); MAE {r['mae'] * 1e2:.4f} ×10⁻². {r['seconds']:.0f} s for "
        "the whole split (client and server on one machine).",
        "",
        f"Measured on {r['device']}, commit {r['commit']}, {r['date']}. Reproduce: `python -m bench.physionet_served`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
