"""Forecasting a whole table on Ray Data against one `Model.predict` process.

A synthetic long table in pbcseq's channels (--series series, 2–12 visits each at irregular days, lab
values drawn around the training data's medians), written as 8 parquet files whose rows are shuffled
so that each patient's visits are spread over several of them. Timed, on this machine:
- one process: `Model.predict(table, query_times)` on the whole table (torch's threads);
- `latentcast.batch.forecast_table` on a local Ray with 1 and 2 actors (wall time of the whole job:
  read, hash-partition by id, forecast, write three parquet directories).
Engine overhead per series = (Ray wall time − one-process time) / series, at equal forecast work.

    python -m bench.batch_ray [--series 100000] [--samples 32]     # bench/results/batch_ray.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import latentcast
from bench import results
from latentcast.models.training.datasets.pbcseq import CHANNELS, read_pbcseq

ROOT = Path(__file__).resolve().parents[1]
QUERY = [4000.0, 4200.0, 4400.0]  # days: after every synthetic series' last visit (≤ 3,650)


def synthetic_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    real = read_pbcseq()
    medians = real[list(CHANNELS)].median().to_numpy()
    counts = rng.integers(2, 13, n)
    ids = np.repeat(np.arange(n), counts)
    days = np.concatenate([np.sort(rng.uniform(0, 3650, c)) for c in counts])
    values = medians * np.exp(rng.normal(0.0, 0.3, (len(ids), len(CHANNELS))))
    values[rng.random(values.shape) < 0.2] = np.nan  # channels missing at some visits
    frame = pd.DataFrame(values, columns=list(CHANNELS))
    frame.insert(0, "time", days.round())
    frame.insert(0, "id", ids)
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--gpus", type=float, default=0.0, help="GPUs per actor (the device's run; 0: CPU actors)")
    args = ap.parse_args()
    import ray

    from latentcast.batch import forecast_table

    table = synthetic_table(args.series)
    work = Path(tempfile.mkdtemp(prefix="batch_ray_"))
    (work / "obs").mkdir()
    shuffled = table.sample(frac=1.0, random_state=0)
    for k, idx in enumerate(np.array_split(np.arange(len(shuffled)), 8)):
        shuffled.iloc[idx].to_parquet(work / "obs" / f"part-{k}.parquet", index=False)

    device = "cuda" if args.gpus else "cpu"
    model = latentcast.load("pbcseq", device=device, num_samples=args.samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        expected = model.predict(table, QUERY, on_error="skip")
        one = time.perf_counter() - t0
    answered = expected["id"].nunique()
    rows: list[dict[str, Any]] = [
        {"how": f"one process, Model.predict on {device} ({torch.get_num_threads()} threads)", "seconds": one}
    ]
    cpus = os.cpu_count() or 2
    gpus = torch.cuda.device_count() if args.gpus else 0
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    for w in (int(x) for x in args.workers.split(",")):
        out = work / f"out{w}"
        summary, _ = forecast_table(
            work / "obs",
            out,
            "pbcseq",
            QUERY,
            concurrency=w,
            num_samples=args.samples,
            num_gpus=args.gpus,
            progress=False,
        )
        assert summary.answered == answered, (summary, answered)
        rows.append({"how": f"Ray Data, {w} actor(s)", "seconds": summary.seconds, "summary": str(summary)})
        got = pd.read_parquet(out / "forecasts")
        a = got.sort_values(["id", "time", "channel"])["mean"].to_numpy()
        b = expected.sort_values(["id", "time", "channel"])["mean"].to_numpy()
        rows[-1]["max_rel_diff"] = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r["series_per_s"] = args.series / r["seconds"]
        r["overhead_ms_per_series"] = 1e3 * (r["seconds"] - one) / args.series
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "series": args.series,
        "observations": len(table),
        "samples": args.samples,
        "cpus": cpus,
        "gpus_per_actor": args.gpus,
        "rows": rows,
    }
    results.write(ROOT / "bench" / "results", "batch_ray", r, markdown(r))
    print(markdown(r))


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# A whole table on Ray Data against one Model.predict process",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. {r['series']:,} synthetic series in pbcseq's channels "
        f"({r['observations']:,} visits, 2–12 per series, 20% of values missing), 8 parquet files with each "
        f"series' rows spread over them; 3 query times per series, {r['samples']} latent samples, 3 quantiles. "
        f"Ray: a local cluster of {r['cpus']} CPUs, {r['gpus_per_actor']:g} GPU per actor; each actor reserves "
        "what leaves Ray's read and shuffle tasks their share (`latentcast.batch.reserved_cpus`) and runs torch "
        "on as many threads as Ray gives it.",
        "",
        "| how | wall time (s) | series/s | overhead vs one process (ms/series) | max rel. diff. of the mean |",
        "|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        diff = f"{x['max_rel_diff']:.1e}" if "max_rel_diff" in x else "—"
        lines.append(
            f"| {x['how']} | {x['seconds']:.1f} | {x['series_per_s']:,.0f} | "
            f"{x['overhead_ms_per_series']:+.2f} | {diff} |"
        )
    lines += ["", "Reproduce: `python -m bench.batch_ray` (needs `latentcast[ray]`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
