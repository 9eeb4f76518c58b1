"""How many posterior samples a PhysioNet 2012 forecast needs, on the validation split only.

Each seed's run (runs/physionet2012/seedS) forecasts every validation observation at t ≥ 24 h from those
before, as the test table does, with 0 (the posterior mean alone), 8, 32 (the service's default) and
128 latent samples: min-max MSE and MAE, 80% coverage and the forecast's wall time.

    python -m bench.physionet_samples [--seeds 3] [--data physionet2012:PATH]

writes bench/results/physionet2012_samples.md (and .json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import results
from bench.evaluate_physionet import forecast_test
from bench.physionet import Scale, validation_as_test
from latentcast.models.training import BEST, build_experiment, load_dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = (0, 8, 32, 128)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", default="physionet2012")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "physionet2012")
    args = ap.parse_args()
    split = load_dataset(build_experiment("physionet2012", data={"name": args.data}).data)
    scale = Scale.fit(split)
    val = validation_as_test(split)
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for n in SAMPLES:
            v = forecast_test(args.runs / f"seed{seed}" / BEST, val, scale, "cpu", samples=n)
            rows.append(
                {
                    "seed": seed,
                    "samples": n,
                    "mse": v["mse"],
                    "mae": v["mae"],
                    "coverage80": v["coverage80"],
                    "seconds": v["predict_seconds"],
                }
            )
            print(rows[-1], flush=True)
    r = {"device": results.machine("cpu"), "commit": results.commit(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    results.write(ROOT / "bench" / "results", "physionet2012_samples", r, markdown(r))


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# PhysioNet 2012: posterior samples per forecast, on the validation split",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. Each seed of runs/physionet2012 forecasts every",
        "validation observation at t ≥ 24 h from those before (2,400 records), with S latent samples (0: the",
        "posterior mean alone, and the decoder's σ for the quantiles). Min-max MSE ×10⁻³ and MAE ×10⁻², as the",
        "test table.",
        "",
        "| seed | samples | MSE ×10⁻³ | MAE ×10⁻² | 80% coverage | forecast time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['seed']} | {x['samples']} | {x['mse'] * 1e3:.3f} | {x['mae'] * 1e2:.3f} | "
            f"{100 * x['coverage80']:.1f}% | {x['seconds']:.1f} |"
        )
    spread = max(
        (max(x["mse"] for x in group) - min(x["mse"] for x in group)) / min(x["mse"] for x in group)
        for group in ([x for x in r["rows"] if x["seed"] == s] for s in {x["seed"] for x in r["rows"]})
    )
    lines += [
        "",
        f"Within a seed the MSE moves by at most {100 * spread:.2f}% across sample counts: the forecast mean hardly",
        "depends on the draws, and samples buy the interval's coverage (the posterior mean alone leaves only the",
        "decoder's σ), not accuracy.",
        "",
        "Reproduce: `python -m bench.physionet_samples`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
