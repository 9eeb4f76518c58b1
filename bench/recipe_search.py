"""Choose the default recipe on the validation splits of several data sets, not one.

Each variant in bench/recipes/*.toml (on top of models/training/configs/default.toml) is trained on every data
set of bench.your_data; it is scored by the geometric mean, over data sets, of its validation NMSE
divided by last-observation-carried-forward's (each validation series' second half forecast from its
first half). The test splits are not looked at.

    python -m bench.recipe_search [--only oxboys,milk]   # writes bench/results/recipe_selection.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import results

ROOT = Path(__file__).resolve().parents[1]
SEARCH_SETS = "oxboys,chickweight,milk,remifentanil,quinidine,pbcseq,synthetic_seconds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=SEARCH_SETS)
    ap.add_argument("--variants", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "recipe_search")
    args = ap.parse_args()
    variants = sorted((ROOT / "bench" / "recipes").glob("*.toml"))
    if args.variants:  # "none": only redo the choice and the table from bench/results
        variants = [v for v in variants if v.stem in args.variants.split(",")]
    previous = ROOT / "bench" / "results" / "recipe_selection.json"
    table: dict[str, dict[str, Any]] = json.loads(previous.read_text())["table"] if previous.exists() else {}
    for v in variants:  # re-running some variants keeps the others' rows
        out = args.work / v.stem
        cmd = [sys.executable, "-m", "bench.your_data", "--only", args.only, "--config", str(v)]
        cmd += ["--runs", str(out / "runs"), "--out", str(out), "--name", "result"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        rows = json.loads((out / "result.json").read_text())["rows"]
        table[v.stem] = {
            "ratios": {r["name"]: r["val_half"]["model"] / r["val_half"]["locf"] for r in rows if "val_half" in r},
            "coverage": {r["name"]: r["val_half"]["coverage80"] for r in rows if "val_half" in r},
            "failed": [r["name"] for r in rows if "error" in r],
            "seconds": time.perf_counter() - t0,
        }
        t = table[v.stem]
        t["score"] = float(np.exp(np.mean(np.log(list(t["ratios"].values()))))) if t["ratios"] else float("inf")
        print(v.stem, json.dumps(t), flush=True)
    best = min(table, key=lambda k: (len(table[k]["failed"]), _losses(table[k]), table[k]["score"]))
    r = {"device": results.machine("cpu"), "commit": results.commit(), "date": time.strftime("%Y-%m-%d")}
    results.write(
        ROOT / "bench" / "results", "recipe_selection", {**r, "table": table, "chosen": best}, markdown(table, best, r)
    )
    print(markdown(table, best, r))


def _losses(row: dict[str, Any]) -> int:
    """Data sets on which a variant does not beat LOCF: the first thing the choice minimises."""
    return sum(r >= 1.0 for r in row["ratios"].values())


def markdown(table: dict[str, dict[str, Any]], best: str, r: dict[str, Any]) -> str:
    sets = sorted({s for t in table.values() for s in t["ratios"]})
    lines = [
        "# Choosing the default recipe on several data sets' validation splits",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. Each variant (bench/recipes/, on top of",
        "models/training/configs/default.toml) trained on each data set with `latentcast train --data FILE",
        "--channels …",
        "--config VARIANT`; the cell is its validation NMSE ÷ LOCF's (second half of each validation series from",
        "its first half; below 1 beats LOCF). The choice: the fewest data sets where LOCF wins, then the lowest",
        "score, the geometric mean over data sets. Test splits unused.",
        "",
        "| variant | " + " | ".join(sets) + " | LOCF wins | **score** | time |",
        "|---|" + "---|" * (len(sets) + 3),
    ]
    for name, t in table.items():
        cells = [f"{t['ratios'][s]:.2f}" if s in t["ratios"] else "failed" for s in sets]
        mark = "**" if name == best else ""
        lines.append(
            f"| {mark}{name}{mark} | "
            + " | ".join(cells)
            + f" | {_losses(t)} | **{t['score']:.3f}** | {t['seconds'] / 60:.0f} min |"
        )
    lines += [
        "",
        f"Chosen: **{best}** (now models/training/configs/default.toml).",
        "",
        "Reproduce: `python -m bench.recipe_search`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
