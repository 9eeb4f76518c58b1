"""The PhysioNet 2012 model ablation, on the validation split only, at an equal training budget.

Each variant (bench/recipes/physionet/*.toml, on top of models/configs/physionet2012.toml) is trained
for at most --minutes minutes of wall time on this machine, then scored like the test table (min-max
MSE of every validation observation at t ≥ 24 h from those before). The test split is not looked at.

    python -m bench.physionet_ablation [--minutes 20] [--variants a,b]   # bench/results/physionet2012_ablation.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import results
from bench.evaluate_physionet import forecast_test
from bench.physionet import Scale, locf, score, targets
from latentcast.models.checkpoint import load_checkpoint
from latentcast.models.config import ExperimentConfig, from_dict, load_config_file, merge
from latentcast.models.datasets import load_dataset
from latentcast.models.recipes import build_experiment, recipe
from latentcast.models.train import BEST, METRICS, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--variants", default="")
    ap.add_argument("--data", default="physionet2012")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "physionet_ablation")
    args = ap.parse_args()
    files = sorted((ROOT / "bench" / "recipes" / "physionet").glob("*.toml"))
    if args.variants:
        files = [f for f in files if f.stem in args.variants.split(",")]
    exp0 = build_experiment("physionet2012", data={"name": args.data})
    split = load_dataset(exp0.data)
    scale = Scale.fit(split)
    val_split = type(split)(
        split.train, split.val, split.val, split.channels, split.log_channels, split.time, split.description
    )
    series, queries = targets(split.val)
    base = score(series, locf(series, queries, scale), scale)
    rows: dict[str, Any] = {}
    for f in files:
        values = merge(merge(recipe("physionet2012"), {"data": {"name": args.data}}), load_config_file(f))
        values = merge(values, {"train": {"max_minutes": args.minutes}})
        exp = from_dict(ExperimentConfig, values)
        run = args.work / f.stem
        t0 = time.perf_counter()
        train(exp, split, run, device="cpu", show_progress=False)
        r = forecast_test(run / BEST, val_split, scale, "cpu")  # test = val here: the validation split
        m = json.loads((run / METRICS).read_text())
        rows[f.stem] = {
            "mse": r["mse"],
            "mae": r["mae"],
            "coverage80": r["coverage80"],
            "epochs": len(m["history"]),
            "best_epoch": m["best"]["epoch"],
            "minutes": (time.perf_counter() - t0) / 60,
            "train_nfe": sum(h["train_nfe"] for h in m["history"]),
            "about": f.read_text().splitlines()[0].lstrip("# "),
            "architecture": load_checkpoint(run / BEST).config.describe(),
        }
        print(f.stem, json.dumps(rows[f.stem]), flush=True)
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "minutes": args.minutes,
        "locf": {"mse": base["mse"], "mae": base["mae"]},
        "rows": rows,
    }
    results.write(ROOT / "bench" / "results", "physionet2012_ablation", r, markdown(r))
    print(markdown(r))


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# PhysioNet 2012: ablation on the validation split",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. Each variant on top of models/configs/physionet2012.toml,",
        f"trained for at most {r['minutes']:g} minutes on this machine (an equal budget), the best epoch by",
        "validation;",
        "scored on validation like the test table (min-max MSE ×10⁻³ and MAE ×10⁻², t ≥ 24 h from t < 24 h).",
        "",
        f"LOCF on validation: MSE {r['locf']['mse'] * 1e3:.3f}, MAE {r['locf']['mae'] * 1e2:.3f}.",
        "",
        "| variant | MSE ×10⁻³ | MAE ×10⁻² | 80% coverage | epochs (best) | minutes | training NFE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in sorted(r["rows"].items(), key=lambda kv: kv[1]["mse"]):
        lines.append(
            f"| {name}: {x['about']} | {x['mse'] * 1e3:.3f} | {x['mae'] * 1e2:.3f} | {100 * x['coverage80']:.1f}% | "
            f"{x['epochs']} ({x['best_epoch']}) | {x['minutes']:.0f} | {x['train_nfe']:,} |"
        )
    lines += ["", "Reproduce: `python -m bench.physionet_ablation`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
