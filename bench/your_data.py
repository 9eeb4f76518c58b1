"""Your data, trained right: `latentcast train --data FILE --channels … [--time-unit U]` with no other flag on real
irregular long tables (bench/data/, see PROVENANCE.md) and two synthetic ones (seconds; ISO date-times),
then each test split's held-out last points forecast by the model, LOCF and a per-series linear trend.

    python -m bench.your_data [--only oxboys,milk] [--config extra.toml]   # writes bench/results/your_data.md

`--config` (recipe search only, bench/recipe_search.py) adds a TOML on top of the default recipe; the
published table uses none.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import results
from latentcast.models.checkpoint import load_checkpoint
from latentcast.models.config import DataConfig, from_dict
from latentcast.models.datasets import load_dataset
from latentcast.models.forecast import Forecaster
from latentcast.models.metrics import baseline_nmse, forecast_contexts, holdout_metrics
from latentcast.models.preprocess import drop_outliers

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"


@dataclasses.dataclass(frozen=True)
class DataSet:
    name: str
    file: str
    channels: tuple[str, ...]
    unit: str  # what the numbers in the time column are (for the table)
    about: str
    time_unit: str | None = None  # --time-unit (numeric times need it; date-times: chosen from the data)


SETS = [
    DataSet(
        "oxboys",
        "oxboys.csv.gz",
        ("height",),
        "years (centred: negative before the middle visit)",
        "26 boys' heights",
        "year",
    ),
    DataSet("chickweight", "chickweight.csv.gz", ("weight",), "days", "50 chicks' weights, 4 diets", "day"),
    DataSet("milk", "milk.csv.gz", ("protein",), "weeks", "79 cows' milk protein", "week"),
    DataSet(
        "remifentanil",
        "remifentanil.csv.gz",
        ("conc",),
        "minutes",
        "65 patients' remifentanil concentrations",
        "minute",
    ),
    DataSet(
        "quinidine", "quinidine.csv.gz", ("conc", "glyco"), "hours", "136 patients' quinidine and glycoprotein", "hour"
    ),
    DataSet(
        "pbcseq",
        "pbcseq.csv.gz",
        ("bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"),
        "days",
        "312 PBC patients' labs",
        "day",
    ),
    DataSet(
        "synthetic_seconds", "synthetic_seconds.csv.gz", ("a", "b"), "seconds", "synthetic damped oscillators", "second"
    ),
    DataSet("synthetic_dates", "synthetic_dates.csv.gz", ("a", "b"), "ISO date-times", "the same, dated"),
]


def make_synthetic(out: Path) -> None:
    """Two synthetic tables of the same 120 irregularly sampled damped oscillators (2 channels, one
    missing at random), one with times in seconds spanning ~1 hour, one with ISO date-times."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(120):
        n = int(rng.integers(8, 25))
        t = np.sort(rng.uniform(0, 3600, n))
        w, decay, phase = rng.uniform(1.5, 3.0) / 600, rng.uniform(0.5, 1.5) / 3600, rng.uniform(0, 2 * np.pi)
        a = 5 + 2 * np.exp(-decay * t) * np.cos(w * t + phase) + rng.normal(0, 0.1, n)
        b = 10 + np.exp(-decay * t) * np.sin(w * t + phase) + rng.normal(0, 0.1, n)
        b[rng.random(n) < 0.3] = np.nan
        rows += [
            {"id": f"osc{i}", "time": float(tt), "a": float(x), "b": float(y)} for tt, x, y in zip(t, a, b, strict=True)
        ]
    frame = pd.DataFrame(rows)
    gz = {"method": "gzip", "mtime": 0}  # no timestamp in the header: the same bytes every run
    frame.to_csv(out / "synthetic_seconds.csv.gz", index=False, compression=gz)
    stamps = pd.Timestamp("2026-03-01T08:00:00Z") + pd.to_timedelta(frame["time"], unit="s")
    frame.assign(time=stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(
        out / "synthetic_dates.csv.gz", index=False, compression=gz
    )


def run(ds: DataSet, runs: Path, config: Path | None) -> dict[str, Any]:
    out = runs / ds.name
    cmd = [
        sys.executable,
        "-m",
        "latentcast",
        "train",
        "--data",
        str(DATA / ds.file),
        "--channels",
        ",".join(ds.channels),
    ]
    cmd += ["--time-unit", ds.time_unit] if ds.time_unit else []
    cmd += ["--out", str(out), "--quiet", "--device", "cpu"] + (["--config", str(config)] if config else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"name": ds.name, "error": proc.stderr.strip().splitlines()[-1]}
    bundle = load_checkpoint(out / "best.pt")
    metrics = json.loads((out / "metrics.json").read_text())
    data_cfg = from_dict(DataConfig, bundle.data["config"])
    split = load_dataset(data_cfg)
    fc = Forecaster.from_bundle(bundle, "cpu", num_samples=64)

    def score(part: list[Any], task: str) -> tuple[list[Any], dict[str, float], dict[str, dict[str, float]]]:
        """Each series' second half from its first ("half"), or its last point from the rest ("last")."""
        kept = [s for s in drop_outliers(part, bundle.normalizer, data_cfg.outlier_z).series if len(s) >= 2]
        ctx = forecast_contexts(kept, task)
        return kept, holdout_metrics(fc, kept, ctx), baseline_nmse(kept, ctx, bundle.normalizer)

    series, model, base = score(split.test, "half")
    _, last_model, last_base = score(split.test, "last")
    _, val_model, val_base = score(split.val, "half")  # the same task on validation: what recipe_search compares
    return {
        "name": ds.name,
        "channels": list(ds.channels),
        "unit": ds.unit,
        "about": ds.about,
        "series": bundle.data.get("series"),
        "test_series": len(series),
        "test_points": model.get("forecast_points"),
        "model": model,
        "locf": base["locf"],
        "linear_trend": base["linear_trend"],
        "last_point": {"model": last_model, "locf": last_base["locf"], "linear_trend": last_base["linear_trend"]},
        "epochs": len(metrics["history"]),
        "best_epoch": metrics["best"].get("epoch"),
        "stopped": metrics.get("stopped_early"),
        "wall_seconds": wall,
        "time_scale": bundle.time.scale,
        "log_channels": [c for c, lg in zip(bundle.channels, bundle.normalizer.log, strict=True) if lg],
        "calibration": list(bundle.calibration) if bundle.calibration else None,
        "val_report": metrics.get("report"),
        "val_half": {
            "model": val_model.get("nmse"),
            "locf": val_base["locf"]["nmse"],
            "coverage80": val_model.get("coverage80"),
        },
    }


def markdown(rows: list[dict[str, Any]], r: dict[str, Any]) -> str:
    lines = [
        "# Your data: `latentcast train --data FILE --channels … [--time-unit U]`, no other flag",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. Each data set's series are split by id 80/10/10 (seeded);",
        "each test series is forecast by the best model (chosen on validation), by carrying the last observation",
        "forward (LOCF) and by a per-series linear trend, on two tasks: its second half from its first half, and",
        "its last point from the rest. NMSE: squared error over the training variance of each channel (after the",
        "log where the model logs it), averaged over channels; lower is better. Coverage: the 80% interval's.",
        "",
        "| data (time unit) | test series | second half: model | LOCF | linear trend | model ÷ LOCF | 80% coverage "
        "| last point: model | LOCF | model ÷ LOCF | epochs (best) | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        if "error" in x:
            lines.append(f"| {x['name']} | training failed: {x['error']} | | | | | | | |")
            continue
        m, lo, tr = x["model"]["nmse"], x["locf"]["nmse"], x["linear_trend"]["nmse"]
        lm, llo = x["last_point"]["model"]["nmse"], x["last_point"]["locf"]["nmse"]
        lines.append(
            f"| {x['name']} ({x['unit']}) | {x['test_series']} | **{m:.3f}** | {lo:.3f} | {tr:.3f} | {m / lo:.2f} | "
            f"{100 * x['model']['coverage80']:.0f}% | {lm:.3f} | {llo:.3f} | {lm / llo:.2f} | "
            f"{x['epochs']} ({x['best_epoch']}) | {x['wall_seconds']:.0f} s |"
        )
    lines += ["", "Per channel, second half (model / LOCF / linear trend):", ""]
    for x in rows:
        if "error" in x:
            continue
        cells = [
            f"{c} {x['model'].get('nmse_' + c, float('nan')):.3f} / {x['locf'].get('nmse_' + c, float('nan')):.3f} / "
            f"{x['linear_trend'].get('nmse_' + c, float('nan')):.3f}"
            for c in x["channels"]
        ]
        extra = f"; time scale {x['time_scale']:.4g}; logged: {x['log_channels'] or 'none'}"
        extra += f"; calibration {x['calibration']}" if x["calibration"] else ""
        lines.append(f"- {x['name']} ({x['about']}): " + "; ".join(cells) + extra)
    lines += ["", f"Reproduce: `python -m bench.your_data` ({r['command']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated data set names")
    ap.add_argument("--config", type=Path, default=None, help="recipe search only: TOML on top of the default")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "your_data")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default="your_data")
    args = ap.parse_args()
    make_synthetic(DATA)
    chosen = [d for d in SETS if not args.only or d.name in args.only.split(",")]
    rows = []
    for ds in chosen:
        rows.append(run(ds, args.runs, args.config))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "val_report"}, default=str)[:600], flush=True)
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv[1:]) or "all data sets",
        "rows": rows,
    }
    results.write(args.out, args.name, r, markdown(rows, r))
    print(markdown(rows, r))


if __name__ == "__main__":
    main()
