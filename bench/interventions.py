"""Known inputs measured (issue 26): on three dosing tables, a model trained with the doses and static
covariates against one trained without them, LOCF and a per-series linear trend, on each table's test
split, both tasks (the last point; the second half).

    python -m bench.interventions [--only pkpd] [--seeds 0,1,2] [--runs DIR] [--config TOML]
    # writes bench/results/interventions.md

Each model is trained as a user would: `latentcast train --data FILE --channels … --time-unit UNIT`
(and `--events dose --static …`), nothing else. The model with inputs is scored twice: given every dose
(those after the cut being the plan, as a forecast under a known plan is asked), and given only the doses
up to the last context observation. Scores are `Model.backtest`'s: NMSE, CRPS and the 80% interval's
coverage on the data's scale, over all channels. With several `--seeds`, each seed is another split of
the table (data.split_seed) and training seed, so that a table of 59 or 136 series is scored on more
than one draw of its 5–13 test series; the tables give the mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import latentcast
from bench import results
from latentcast import read_long_table
from latentcast.backtest import TASKS, split_table
from latentcast.models.training import data_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    file: str
    channels: tuple[str, ...]
    events: tuple[str, ...]
    static: tuple[str, ...]
    about: str
    levels: tuple[str, ...] = ()
    unit: str = "hour"
    cut: float | None = None  # the "early" task: forecast every observation from this time on, from those before


TABLES = [
    Table(
        "quinidine",
        "quinidine.csv.gz",
        ("conc", "glyco"),
        ("dose",),
        ("age", "height", "weight", "race_latin", "race_black", "smoke", "ethanol", "heart", "creatinine_low"),
        "136 patients on oral quinidine (nlme::Quinidine): concentration and glycoprotein",
    ),
    Table(
        "phenobarb",
        "phenobarb.csv.gz",
        ("conc",),
        ("dose",),
        ("weight", "apgar"),
        "59 neonates on phenobarbital (nlme::Phenobarb)",
    ),
    Table(
        "pkpd_synthetic",
        "pkpd_synthetic.csv.gz",
        ("conc",),
        ("dose",),
        ("weight",),
        "200 synthetic one-compartment subjects (bench/pkpd.py), truth known",
    ),
    Table(
        "remifentanil",
        "remifentanil_rate.csv.gz",
        ("conc",),
        (),
        ("age", "sex_female", "height", "weight", "lbm"),
        "65 volunteers on remifentanil infusions (nlme::Remifentanil), the rate a level; times in minutes",
        ("rate",),
        "minute",
        10.0,
    ),
    Table(
        "pkpd_infusion",
        "pkpd_infusion.csv.gz",
        ("conc",),
        ("dose",),
        ("weight",),
        "the same subjects with piecewise-constant infusions too (bench/pkpd.py --infusion; --levels rate)",
        ("rate",),
        "hour",
        36.0,
    ),
]

# the runs compared: (label, trained with inputs, future doses given)
VARIANTS = [("with inputs", True, True), ("inputs, no future doses", True, False), ("without inputs", False, False)]


def seeded_config(config: Path | None, seed: int, runs: Path) -> Path | None:
    """The recipe overrides for one seed: `config` with data.split_seed and train.seed set (JSON)."""
    if seed == 0:
        return config
    values: dict[str, Any] = tomllib.loads(config.read_text()) if config else {}
    values.setdefault("data", {})["split_seed"] = seed
    values.setdefault("train", {})["seed"] = seed
    path = runs / f"config-{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


def run_dir(t: Table, runs: Path, with_inputs: bool, config: Path | None, seed: int) -> Path:
    kind = f"inputs-{config.stem if config else 'default'}" if with_inputs else "plain"
    return runs / f"{t.name}-{kind}-{seed}"


def train(t: Table, runs: Path, with_inputs: bool, config: Path | None = None, seed: int = 0) -> tuple[Path, float]:
    """Train one model, or reuse the run in `runs` that trained it (its best.pt and wall.json)."""
    out = run_dir(t, runs, with_inputs, config, seed)
    if (out / "wall.json").exists():
        return out, float(json.loads((out / "wall.json").read_text()))
    cmd = [
        sys.executable,
        "-m",
        "latentcast",
        "train",
        "--data",
        str(DATA / t.file),
        "--channels",
        ",".join(t.channels),
    ]
    cmd += ["--time-unit", t.unit, "--out", str(out), "--quiet", "--device", "cpu"]
    if with_inputs:
        cmd += ["--events", ",".join(t.events)] if t.events else []
        cmd += ["--levels", ",".join(t.levels)] if t.levels else []
        cmd += ["--static", ",".join(t.static)]
    overrides = seeded_config(config if with_inputs else None, seed, runs)
    cmd += ["--config", str(overrides)] if overrides else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{t.name}: {proc.stderr.strip().splitlines()[-1]}")
    wall = time.perf_counter() - t0
    (out / "wall.json").write_text(json.dumps(wall))
    return out, wall


def run(t: Table, runs: Path, config: Path | None = None, seed: int = 0) -> dict[str, Any]:
    table = read_long_table(DATA / t.file)
    row: dict[str, Any] = {"name": t.name, "about": t.about, "channels": list(t.channels), "scores": {}, "seed": seed}
    models = {}
    for with_inputs in (True, False):
        out, wall = train(t, runs, with_inputs, config, seed)
        models[with_inputs] = latentcast.load(out / "best.pt", device="cpu")
        metrics = json.loads((out / "metrics.json").read_text())
        row[f"wall_{with_inputs}"] = wall
        row[f"epochs_{with_inputs}"] = len(metrics["history"])
        row[f"val_{with_inputs}"] = metrics["best_score"]  # the validation NMSE the epoch was chosen on
    ids = set(split_table(data_config(models[True].bundle))["id"].astype(str))
    test = table[table["id"].astype(str).isin(ids)]
    row["test_series"] = len(ids)
    for task in TASKS:
        for label, with_inputs, future in VARIANTS:
            bt = models[with_inputs].backtest(test, task=task, future_inputs=future)
            scores = bt.scores.set_index(["method", "channel"])
            row["scores"][(task, label)] = scores.loc["latent_ode"].to_dict("index")
            if label == "without inputs":
                for base in ("locf", "linear_trend"):
                    row["scores"][(task, base)] = scores.loc[base].to_dict("index")
            row[f"points_{task}"] = bt.points
    if t.cut is not None:
        row["scores"].update(early(t, models, test))
    return row


def early(t: Table, models: dict[bool, Any], test: Any) -> dict[tuple[str, str], Any]:
    """The "early" task: every observation at or after `t.cut` forecast from those before it, with the plan
    (every later input), without it (inputs before the cut only: a level holds), by the model without
    inputs and by LOCF. NMSE per channel (÷ the held values' variance), then averaged; 80% coverage."""
    import numpy as np
    import pandas as pd

    ch, cols = list(t.channels), [*t.events, *t.levels]
    seen = test[ch].notna().any(axis=1)
    context, held = test[seen & (test["time"] < t.cut)], test[seen & (test["time"] >= t.cut)]
    both = set(context["id"]) & set(held["id"])
    context, held = context[context["id"].isin(both)], held[held["id"].isin(both)]
    inputs = test[test["id"].isin(both) & test[cols].notna().any(axis=1)][["id", "time", *cols]]
    actual = held.melt(["id", "time"], ch, "channel", "actual").dropna(subset=["actual"])
    out: dict[tuple[str, str], Any] = {}

    def scores(points: Any, low: Any = None, high: Any = None) -> dict[str, Any]:
        per = {}
        for c in ch:
            m = actual["channel"] == c
            a = actual.loc[m, "actual"].to_numpy()
            nmse = float(np.mean((points[m.to_numpy()] - a) ** 2) / max(np.var(a), 1e-12))
            cov = float(np.mean((low[m.to_numpy()] <= a) & (a <= high[m.to_numpy()]))) if low is not None else np.nan
            per[c] = {"nmse": nmse, "crps": np.nan, "coverage80": cov}
        per["all"] = {k: float(np.mean([per[c][k] for c in ch])) for k in ("nmse", "crps", "coverage80")}
        return per

    for label, with_inputs, future in VARIANTS:
        frame = context if with_inputs else context[["id", "time", *ch]]
        if with_inputs:
            plan = inputs if future else inputs[inputs["time"] < t.cut]
            frame = pd.concat([context.drop(columns=cols), plan], ignore_index=True)
        fc = models[with_inputs].predict(frame, held[["id", "time"]], quantiles=[0.1, 0.9], on_error="skip",
                                         extra_columns="ignore")  # fmt: skip
        got = actual.merge(fc, on=["id", "time", "channel"], how="left")
        out[("early", label)] = scores(got["point"].to_numpy(), got["q0.1"].to_numpy(), got["q0.9"].to_numpy())
    last = context.sort_values("time").groupby("id")[ch].last()  # LOCF
    locf = np.array([last.loc[i, c] for i, c in zip(actual["id"], actual["channel"], strict=True)])
    out[("early", "locf")] = scores(locf)
    out[("early", "linear_trend")] = {"all": {"nmse": np.nan, "crps": np.nan, "coverage80": np.nan}}
    out[("early", "points")] = {"all": {"nmse": float(len(actual)), "crps": np.nan, "coverage80": np.nan}}
    return out


LABELS = ("with inputs", "inputs, no future doses", "without inputs", "locf", "linear_trend")


def _mean(xs: list[float]) -> str:
    """The mean and, over several seeds, the standard deviation."""
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def grouped(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for x in rows:
        out.setdefault(x["name"], []).append(x)
    return out


def markdown(rows: list[dict[str, Any]], r: dict[str, Any]) -> str:
    seeds = sorted({x["seed"] for x in rows})
    lines = [
        "# Known inputs: doses and static covariates (issue 26)",
        "",
        f"Measured on {r['device']} at commit {r['commit']}, {r['date']}, over split seeds {seeds}.",
        "",
        "Each table's test split (series no model saw), scored by `Model.backtest` on the data's scale: NMSE over",
        "all channels (the mean of each channel's NMSE), CRPS (the mean over channels) and the 80% interval's",
        "coverage. *with inputs*: trained with `--events dose --static …` and given every dose, those after the",
        "cut being the plan; *inputs, no future doses*: the same model given the doses up to the last context",
        "observation only; *without inputs*: trained on the channels alone, as before this issue. Each seed is",
        "another split of the table and another training seed; cells are the mean (± standard deviation) over",
        "seeds, and *wins* counts the seeds where the model with inputs beats LOCF.",
        "",
    ]
    for task in TASKS:
        title = "last point" if task == "last" else "second half"
        lines += [
            f"## {title}",
            "",
            "| table (test series, points per seed) | with inputs | inputs, no future doses | without inputs | LOCF "
            "| linear trend | wins |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, xs in grouped(rows).items():
            cells = []
            for label in LABELS:
                each = [x["scores"][(task, label)]["all"] for x in xs]
                crps = statistics.mean(s["crps"] for s in each)
                covs = [s["coverage80"] for s in each if s["coverage80"] == s["coverage80"]]
                cov = f", {100 * statistics.mean(covs):.0f}%" if covs else ""
                cells.append(f"{_mean([s['nmse'] for s in each])} ({crps:.3g}{cov})")
            wins = sum(
                x["scores"][(task, "with inputs")]["all"]["nmse"] < x["scores"][(task, "locf")]["all"]["nmse"]
                for x in xs
            )
            n_series = statistics.mean(x["test_series"] for x in xs)
            size = f"{n_series:.0f}, {statistics.mean(x[f'points_{task}'] for x in xs):.0f}"
            lines.append(f"| {name} ({size}) | " + " | ".join(cells) + f" | {wins}/{len(xs)} |")
        lines += ["", "Cells: NMSE (CRPS, 80% coverage).", ""]
    early_rows = {n: xs for n, xs in grouped(rows).items() if ("early", "locf") in xs[0]["scores"]}
    if early_rows:
        lines += [
            '## before the plan changes (the "early" task)',
            "",
            "Every observation from the table's cut on, forecast from those before it: a question only the plan",
            "answers. *inputs, no future doses*: no input after the cut (a level holds its last value).",
            "",
            "| table (cut, held values per seed) | with inputs | inputs, no future doses | without inputs | LOCF "
            "| wins |",
            "|---|---|---|---|---|---|",
        ]
        for name, xs in early_rows.items():
            cells = []
            for label in ("with inputs", "inputs, no future doses", "without inputs", "locf"):
                each = [x["scores"][("early", label)]["all"] for x in xs]
                covs = [e["coverage80"] for e in each if e["coverage80"] == e["coverage80"]]
                cov = f" ({100 * statistics.mean(covs):.0f}%)" if covs else ""
                cells.append(f"{_mean([e['nmse'] for e in each])}{cov}")
            wins = sum(
                x["scores"][("early", "with inputs")]["all"]["nmse"] < x["scores"][("early", "locf")]["all"]["nmse"]
                for x in xs
            )
            held = statistics.mean(x["scores"][("early", "points")]["all"]["nmse"] for x in xs)
            cut = next(t.cut for t in TABLES if t.name == name)
            lines.append(f"| {name} ({cut:g}, {held:.0f}) | " + " | ".join(cells) + f" | {wins}/{len(xs)} |")
        lines += ["", "Cells: NMSE (80% coverage).", ""]
    if r.get("failed"):
        lines += ["## Trainings that stopped with an error (not scored)", ""]
        lines += [f"- {f}" for f in r["failed"]] + [""]
    lines += ["## Per channel, NMSE (with inputs / without / LOCF), mean over seeds", ""]
    for name, xs in grouped(rows).items():
        for task in TASKS:
            per = []
            for ch in xs[0]["channels"]:
                vals = [
                    statistics.mean(x["scores"][(task, k)].get(ch, {}).get("nmse", float("nan")) for x in xs)
                    for k in ("with inputs", "without inputs", "locf")
                ]
                per.append(f"{ch} {' / '.join(f'{v:.3f}' for v in vals)}")
            lines.append(f"- {name}, {task}: " + "; ".join(per))
    lines += ["", "## Training (mean per seed)", ""]
    for name, xs in grouped(rows).items():
        m = {k: statistics.mean(x[k] for x in xs) for k in ("epochs_True", "wall_True", "epochs_False", "wall_False")}
        val = [x["val_True"] for x in xs]
        lines.append(
            f"- {name} ({xs[0]['about']}): with inputs {m['epochs_True']:.0f} epochs in {m['wall_True']:.0f} s "
            f"(validation NMSE {_mean(val)}); without {m['epochs_False']:.0f} epochs in {m['wall_False']:.0f} s"
        )
    lines += [
        "",
        f"Reproduce: `python -m bench.interventions {r.get('args') or '--seeds ' + ','.join(map(str, seeds))}` "
        f"({r['commit']}, {r['device']}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated table names")
    ap.add_argument(
        "--runs", type=Path, default=Path("/tmp/latentcast-interventions"), help="runs kept here are reused"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--config", type=Path, default=None, help="TOML on top of the default recipe (inputs' models)")
    ap.add_argument("--name", default="interventions")
    ap.add_argument("--seeds", default="0", help="comma-separated split and training seeds")
    ap.add_argument("--no-train", action="store_true", help="score only the seeds already trained in --runs")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for t in TABLES:
        if only and t.name not in only:
            continue
        for seed in (int(x) for x in args.seeds.split(",")):
            trained = all((run_dir(t, args.runs, w, args.config, seed) / "wall.json").exists() for w in (True, False))
            if args.no_train and not trained:
                continue
            try:
                rows.append(run(t, args.runs, args.config, seed))
            except RuntimeError as exc:  # a training that stopped with an error: recorded, not scored
                failed.append(f"{t.name} seed {seed}: {exc}")
                print(failed[-1], flush=True)
                continue
            print(f"{t.name} seed {seed}: done", flush=True)
    shown = [f"--only {args.only}"] if args.only else []
    shown += [f"--seeds {args.seeds}"] + ([f"--config {args.config}"] if args.config else [])
    r = {"device": results.machine("cpu"), "commit": results.commit(), "date": time.strftime("%Y-%m-%d"),
         "args": " ".join(shown), "failed": failed}  # fmt: skip
    flat = [dict(x, scores={f"{k[0]}/{k[1]}": v for k, v in x["scores"].items()}) for x in rows]
    results.write(args.out, args.name, {**r, "rows": flat}, markdown(rows, r))
    print(markdown(rows, r))


if __name__ == "__main__":
    main()
