"""Known inputs measured (issue 26): on three dosing tables, a model trained with the doses and static
covariates against one trained without them, LOCF and a per-series linear trend, on each table's test
split, both tasks (the last point; the second half).

    python -m bench.interventions [--only pkpd] [--runs DIR] [--config TOML]   # writes bench/results/interventions.md

Each model is trained as a user would: `latentcast train --data FILE --channels … --time-unit hour`
(and `--events dose --static …`), nothing else. The model with inputs is scored twice: given every dose
(those after the cut being the plan, as a forecast under a known plan is asked), and given only the doses
up to the last context observation. Scores are `Model.backtest`'s: NMSE, CRPS and the 80% interval's
coverage on the data's scale, over all channels.
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
]

# the runs compared: (label, trained with inputs, future doses given)
VARIANTS = [("with inputs", True, True), ("inputs, no future doses", True, False), ("without inputs", False, False)]


def train(t: Table, runs: Path, with_inputs: bool, config: Path | None = None) -> tuple[Path, float]:
    out = runs / f"{t.name}-{'inputs' if with_inputs else 'plain'}"
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
    cmd += ["--time-unit", "hour", "--out", str(out), "--quiet", "--device", "cpu"]
    if with_inputs:
        cmd += ["--events", ",".join(t.events), "--static", ",".join(t.static)]
        cmd += ["--config", str(config)] if config else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{t.name}: {proc.stderr.strip().splitlines()[-1]}")
    return out, time.perf_counter() - t0


def run(t: Table, runs: Path, config: Path | None = None) -> dict[str, Any]:
    table = read_long_table(DATA / t.file)
    row: dict[str, Any] = {"name": t.name, "about": t.about, "channels": list(t.channels), "scores": {}}
    models = {}
    for with_inputs in (True, False):
        out, wall = train(t, runs, with_inputs, config)
        models[with_inputs] = latentcast.load(out / "best.pt", device="cpu")
        metrics = json.loads((out / "metrics.json").read_text())
        row[f"wall_{with_inputs}"] = wall
        row[f"epochs_{with_inputs}"] = len(metrics["history"])
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
    return row


def markdown(rows: list[dict[str, Any]], r: dict[str, Any]) -> str:
    lines = [
        "# Known inputs: doses and static covariates (issue 26)",
        "",
        f"Measured on {r['device']} at commit {r['commit']}, {r['date']}.",
        "",
        "Each table's test split (series no model saw), scored by `Model.backtest` on the data's scale: NMSE over",
        "all channels (the mean of each channel's NMSE), CRPS (the mean over channels) and the 80% interval's",
        "coverage. *with inputs*: trained with `--events dose --static …` and given every dose, those after the",
        "cut being the plan; *inputs, no future doses*: the same model given the doses up to the last context",
        "observation only; *without inputs*: trained on the channels alone, as before this issue.",
        "",
    ]
    for task in TASKS:
        title = "last point" if task == "last" else "second half"
        lines += [
            f"## {title}",
            "",
            "| table (test series, points) | with inputs | inputs, no future doses | without inputs | LOCF "
            "| linear trend |",
            "|---|---|---|---|---|---|",
        ]
        for x in rows:
            cells = []
            for label in ("with inputs", "inputs, no future doses", "without inputs", "locf", "linear_trend"):
                s = x["scores"][(task, label)]["all"]
                cov = f", {100 * s['coverage80']:.0f}%" if s["coverage80"] == s["coverage80"] else ""
                cells.append(f"{s['nmse']:.3f} ({s['crps']:.3g}{cov})")
            lines.append(f"| {x['name']} ({x['test_series']}, {x[f'points_{task}']}) | " + " | ".join(cells) + " |")
        lines += ["", "Cells: NMSE (CRPS, 80% coverage).", ""]
    lines += ["## Per channel, NMSE (with inputs / without / LOCF)", ""]
    for x in rows:
        for task in TASKS:
            per = []
            for ch in x["channels"]:
                vals = [x["scores"][(task, k)].get(ch, {}).get("nmse", float("nan")) for k in
                        ("with inputs", "without inputs", "locf")]  # fmt: skip
                per.append(f"{ch} {' / '.join(f'{v:.3f}' for v in vals)}")
            lines.append(f"- {x['name']}, {task}: " + "; ".join(per))
    lines += ["", "## Training", ""]
    for x in rows:
        lines.append(
            f"- {x['name']} ({x['about']}): with inputs {x['epochs_True']} epochs in {x['wall_True']:.0f} s; "
            f"without {x['epochs_False']} epochs in {x['wall_False']:.0f} s"
        )
    lines += ["", f"Reproduce: `python -m bench.interventions` ({r['commit']}, {r['device']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated table names")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/latentcast-interventions"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--config", type=Path, default=None, help="TOML on top of the default recipe (inputs' models)")
    ap.add_argument("--name", default="interventions")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for t in TABLES:
        if only and t.name not in only:
            continue
        rows.append(run(t, args.runs, args.config))
        print(f"{t.name}: done", flush=True)
    r = {"device": results.machine("cpu"), "commit": results.commit(), "date": time.strftime("%Y-%m-%d")}
    flat = [dict(x, scores={f"{k[0]}/{k[1]}": v for k, v in x["scores"].items()}) for x in rows]
    results.write(args.out, args.name, {**r, "rows": flat}, markdown(rows, r))
    print(markdown(rows, r))


if __name__ == "__main__":
    main()
