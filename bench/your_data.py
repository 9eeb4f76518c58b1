"""Your data, trained right: `latentcast train --data FILE --channels … [--time-unit U]` with no other flag on real
irregular long tables (bench/data/, see PROVENANCE.md) and two synthetic ones (seconds; ISO date-times),
then each test split scored with `Model.backtest` (both tasks) beside LOCF and a per-series linear trend.

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

import latentcast
from bench import results
from latentcast.backtest import TASKS, split_table
from latentcast.models.training import DataConfig, data_config

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
    known: str = ""  # what the table lacks that its values depend on, where the model loses for want of it


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
        "quinidine",
        "quinidine.csv.gz",
        ("conc", "glyco"),
        "hours",
        "136 patients' quinidine and glycoprotein",
        "hour",
        "the concentration follows doses, which this benchmark leaves out (it trains on the channels alone): "
        "bench/interventions.py trains with the table's doses and covariates",
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


def run(ds: DataSet, runs: Path, config: Path | None, rescore: bool = False) -> dict[str, Any]:
    """Train on the table as a user would (or, with `rescore`, take the run already in `runs`) and score
    its test split."""
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
    if not rescore:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"name": ds.name, "error": proc.stderr.strip().splitlines()[-1]}
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    if rescore:  # the training's own wall time, folds included
        wall = metrics.get("wall_seconds_this_run", 0.0) + (
            (metrics.get("report") or {}).get("cross_validation") or {}
        ).get("fold_seconds", 0.0)
    model = latentcast.load(out / "best.pt", device="cpu")
    test = split_table(model_data(model))
    report = metrics.get("report") or {}
    row: dict[str, Any] = {
        "name": ds.name,
        "channels": list(ds.channels),
        "unit": ds.unit,
        "about": ds.about,
        "series": model.bundle.data.get("series"),
        "test_series": int(test["id"].nunique()),
        "val_series": report.get("series"),
        "val_points": report.get("forecast_points"),
        "epochs": len(metrics["history"]),
        "best_epoch": metrics["best"].get("epoch"),
        "stopped": metrics.get("stopped_early"),
        "folds": (report.get("cross_validation") or {}).get("folds"),
        "validation_size": report.get("validation_size"),
        "warnings": report.get("warnings", []),
        "wall_seconds": wall,
        "time_scale": model.bundle.time.scale,
        "log_channels": list(model.log_channels),
        "calibration": list(model.bundle.calibration) if model.bundle.calibration else None,
        "persistence": (report.get("persistence") or {}).get("scales") or {},
    }
    row["reasons"] = {}
    for task in TASKS:  # the user's view: Model.backtest on the data's scale, the `point` column
        bt = model.backtest(test, task=task)
        row[task] = _by_method(bt.scores)
        row["reasons"][task] = {base: model_wins(bt.forecasts, base) for base in ("locf", "linear_trend")}
    rows = report.get("nmse") or {}
    row["validation_nmse"] = {k: (rows.get(k) or {}).get("average") for k in ("latent_ode", "locf", "linear_trend")}
    row["validation_task"] = "last point" if report.get("task") == "last" else "second half"
    # the same on validation, second half: what bench.recipe_search compares (test splits unused there;
    # in-sample when the table was cross-validated: the final model trains on the validation series too)
    val = _by_method(model.backtest(split_table(model_data(model), "val"), task="half").scores)
    row["val_half"] = {
        "model": val["latent_ode"]["all"]["nmse"],
        "locf": val["locf"]["all"]["nmse"],
        "coverage80": val["latent_ode"]["all"]["coverage80"],
    }
    return row


def model_wins(forecasts: pd.DataFrame, base: str, reps: int = 2000, seed: int = 0) -> float:
    """The share of bootstrap resamples of the test series (with replacement) in which the model's point
    forecast has a lower NMSE than `base`: near 0 or 1, the test split tells them apart; near 0.5, not.
    Each channel's squared errors are divided by its held-out values' count and variance, as NMSE does."""
    f = forecasts.dropna(subset=["actual", "point", base])
    if f.empty:
        return float("nan")
    by = f.groupby("channel")["actual"]
    weight = 1.0 / (f["channel"].map(by.var(ddof=0)).clip(lower=1e-12) * f["channel"].map(by.size()))
    diff = ((f["point"] - f["actual"]) ** 2 - (f[base] - f["actual"]) ** 2) * weight
    per = diff.groupby(f["id"]).sum().to_numpy()
    draws = np.random.default_rng(seed).integers(0, len(per), (reps, len(per)))
    return float((per[draws].sum(1) < 0).mean())


def model_data(model: latentcast.Model) -> DataConfig:
    return data_config(model.bundle)


def _by_method(scores: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Backtest scores → method → channel (and "all") → metric."""
    return {
        str(method): {
            str(ch): {k: float(v) for k, v in vals.items()}
            for ch, vals in part.drop(columns=["method"]).set_index("channel").T.to_dict().items()
        }
        for method, part in scores.groupby("method", sort=False)
    }


def verdict(x: dict[str, Any]) -> str:
    """Which baseline beats the model on which task (NMSE over all channels), or that none does."""
    lost = []
    for task in TASKS:
        ours = x[task]["latent_ode"]["all"]["nmse"]
        for base in ("locf", "linear_trend"):
            if x[task][base]["all"]["nmse"] < ours:
                lost.append(f"{base.replace('_', ' ')} on the {'last point' if task == 'last' else 'second half'}")
    return "beats both" if not lost else "loses to " + ", ".join(lost)


def reasons(x: dict[str, Any]) -> list[str]:
    """For each task and baseline that beats the model on the test split: how sure the test split is of it
    (bootstrap over its series), and what validation (or the folds) said when the model was trained."""
    out = []
    val = x.get("validation_nmse") or {}
    where = ("out of fold" if x.get("folds") else "on validation") + f" ({x.get('validation_task', 'second half')})"
    for task in TASKS:
        ours = x[task]["latent_ode"]["all"]["nmse"]
        for base in ("locf", "linear_trend"):
            theirs = x[task][base]["all"]["nmse"]
            if theirs >= ours:
                continue
            share = x["reasons"][task][base]
            name = base.replace("_", " ")
            told = (
                f"training's report already ranked {name} first {where} ({val[base]:.3f} vs {val['latent_ode']:.3f}) "
                "and said to use it"
                if val.get(base) is not None and val.get("latent_ode") is not None and val[base] < val["latent_ode"]
                else f"{where} the model was ahead ({val.get('latent_ode') or float('nan'):.3f} vs "
                f"{val.get(base) or float('nan'):.3f})"
            )
            sure = "the test split cannot tell them apart" if 0.1 < share < 0.9 else f"{name} is better on these series"
            task_name = "last point" if task == "last" else "second half"
            out.append(
                f"{task_name}, {name} {theirs:.3f} vs the model {ours:.3f}: the model wins in {100 * share:.0f}% "
                f"of bootstrap resamples of the {x['test_series']} test series ({sure}); {told}"
            )
    return out


MIN_POINTS = 50  # test points below which a channel's coverage is shown on its own (too few to judge)


def markdown(rows: list[dict[str, Any]], r: dict[str, Any]) -> str:
    lines = [
        "# Your data: `latentcast train --data FILE --channels … [--time-unit U]`, no other flag",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. Each table's series are split by id 80/10/10 (seeded); the",
        "model kept is the epoch best on validation, which is grown to 100 held-out points where a quarter of the",
        "training and validation series allows. Tables too small for that (≤ 200 series) are cross-validated:",
        "5 folds choose the number of epochs (column: epochs (CV)), the model is trained on every training and",
        "validation series, and validation figures are out of fold. Each test series (never trained or chosen on)",
        "is scored with",
        "`Model.backtest` as a user would: on the data's scale, the model's `point` column (the median on logged",
        "channels, the mean elsewhere) beside LOCF and a per-series linear trend, on two tasks: the second half",
        "of each series from its first half, and its last point from the rest. NMSE: squared error ÷ the held-out",
        "values' variance per channel, averaged over channels (lower is better). CRPS: scoringrules' quantile",
        "estimator over 19 levels, on the data's scale. Coverage: of the 50/80/95% intervals, second half, over",
        "all held-out points (per channel below where a channel has few). After training, each channel's",
        "forecasts near its last value are pulled toward it where validation (both tasks) says so",
        "(`models.training.calibrate`; the time scale per channel below, 0: off).",
        "",
        "| data (time unit) | test series | validation series / points | epochs (best) | second half: model | LOCF "
        "| trend | CRPS | coverage 50/80/95 | last point: model | LOCF | trend | verdict | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        if "error" in x:
            lines.append(f"| {x['name']} | training failed: {x['error']} |" + " |" * 12)
            continue
        h, last = x["half"], x["last"]
        cov = "/".join(f"{100 * h['latent_ode']['all'][f'coverage{c}']:.0f}" for c in (50, 80, 95))
        lines.append(
            f"| {x['name']} ({x['unit']}) | {x['test_series']} ({int(h['latent_ode']['all']['points'])} points) | "
            f"{'out of fold: ' if x.get('folds') else ''}{x['val_series']} / {x['val_points']:.0f} | "
            f"{x['epochs']} ({'CV' if x.get('folds') else x['best_epoch']}) | "
            f"**{h['latent_ode']['all']['nmse']:.3f}** | {h['locf']['all']['nmse']:.3f} | "
            f"{h['linear_trend']['all']['nmse']:.3f} | {h['latent_ode']['all']['crps']:.4g} | {cov}% | "
            f"**{last['latent_ode']['all']['nmse']:.3f}** | {last['locf']['all']['nmse']:.3f} | "
            f"{last['linear_trend']['all']['nmse']:.3f} | {verdict(x)} | {x['wall_seconds']:.0f} s |"
        )
    lines += ["", "Per channel, second half (model / LOCF / linear trend), and what training said:", ""]
    for x in rows:
        if "error" in x:
            continue
        h = x["half"]
        cells = [
            f"{c} {h['latent_ode'][c]['nmse']:.3f} / {h['locf'][c]['nmse']:.3f} / {h['linear_trend'][c]['nmse']:.3f}"
            for c in x["channels"]
            if c in h["latent_ode"]
        ]
        extra = f"; logged: {', '.join(x['log_channels']) or 'none'}"
        extra += f"; calibration {[round(v, 3) for v in x['calibration']]}" if x["calibration"] else ""
        held = {c: t for c, t in (x.get("persistence") or {}).items() if t}
        extra += (
            f"; pulled toward the last value over {held} {x['unit']}" if held else "; no pull toward the last value"
        )
        few = [c for c in x["channels"] if c in h["latent_ode"] and h["latent_ode"][c]["points"] < MIN_POINTS]
        for c in few:
            m = h["latent_ode"][c]
            extra += f"; {c}: {m['points']:.0f} test points, 80% coverage {100 * m['coverage80']:.0f}%"
        extra += "".join(f"; *{w}*" for w in x["warnings"])
        lines.append(f"- {x['name']} ({x['about']}): " + "; ".join(cells) + extra)
        for why in reasons(x):
            lines.append(f"  - {why}")
        known = next((d.known for d in SETS if d.name == x["name"]), "")
        if known and reasons(x):
            lines.append(f"  - why: {known}")
    lines += ["", f"Reproduce: `python -m bench.your_data` ({r['command']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated data set names")
    ap.add_argument("--config", type=Path, default=None, help="recipe search only: TOML on top of the default")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "your_data")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default="your_data")
    ap.add_argument("--rescore", action="store_true", help="score the runs already in --runs, do not train")
    args = ap.parse_args()
    make_synthetic(DATA)
    chosen = [d for d in SETS if not args.only or d.name in args.only.split(",")]
    rows = []
    for ds in chosen:
        rows.append(run(ds, args.runs, args.config, args.rescore))
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
