"""The PhysioNet 2012 model ablation, on the validation split only, at an equal training budget.

Each variant (bench/recipes/physionet/*.toml, on top of models/training/configs/physionet2012.toml) is trained
for at most --minutes minutes of wall time on this machine (0: the recipe's epochs), then scored like
the test table (min-max MSE of every validation observation at t ≥ 24 h from those before). The test
split is not looked at. Rows land in a study (--study, default "<minutes> min") of
bench/results/physionet2012_ablation.md and .json; re-running a variant replaces its row, other rows stay.

    python -m bench.physionet_ablation [--minutes 20] [--variants a,b] [--study NAME] [--seed S]

--seed S trains (or with --reuse scores) <work>/<variant>_seedS under that training seed, in row
"<variant>, seed S", so a study can hold several seeds of each variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import results
from bench.evaluate_physionet import forecast_test
from bench.physionet import Scale, locf, score, targets, validation_as_test
from latentcast.models import ModelBundle
from latentcast.models.training import BEST, METRICS, ExperimentConfig, build_experiment, load_dataset, train_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--variants", default="")
    ap.add_argument("--data", default="physionet2012")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "physionet_ablation")
    ap.add_argument("--reuse", action="store_true", help="score a variant's existing run instead of training it")
    ap.add_argument("--study", default="", help='the table the rows go in (default: "<minutes> min")')
    ap.add_argument("--seed", type=int, help="the training seed (default: the recipe's), named in the row")
    args = ap.parse_args()
    files = sorted((ROOT / "bench" / "recipes" / "physionet").glob("*.toml"))
    if args.variants:
        files = [f for f in files if f.stem in args.variants.split(",")]
    exp0 = build_experiment("physionet2012", data={"name": args.data})
    split = load_dataset(exp0.data)
    scale = Scale.fit(split)
    val_split = validation_as_test(split)
    series, queries = targets(split.val)
    base = score(series, locf(series, queries, scale), scale)
    study = args.study or (f"{args.minutes:g} min" if args.minutes else "full recipe")
    out = ROOT / "bench" / "results"
    old = out / "physionet2012_ablation.json"
    r = json.loads(old.read_text()) if old.is_file() else {}
    r.setdefault("studies", {})
    r.update(device=results.machine("cpu"), locf={"mse": base["mse"], "mae": base["mae"]})
    entry = r["studies"].setdefault(study, {"rows": {}})
    entry.update(
        minutes=args.minutes,
        base=describe(build_experiment("physionet2012", data={"name": args.data})),
    )
    rows: dict[str, Any] = entry["rows"]
    for f in files:
        train: dict[str, Any] = {"max_minutes": args.minutes}
        name = f.stem
        if args.seed is not None:
            train["seed"] = args.seed
            name = f"{f.stem}, seed {args.seed}"
        exp = build_experiment("physionet2012", f, data={"name": args.data}, train=train)
        run = args.work / (f.stem if args.seed is None else f"{f.stem}_seed{args.seed}")
        own = load_dataset(exp.data) if exp.data.static else split  # descriptors as static covariates
        if not (args.reuse and (run / BEST).is_file()):
            train_model(exp, own, run, device="cpu", show_progress=False)
        # test = val here: the validation split
        v = forecast_test(run / BEST, validation_as_test(own), scale, "cpu", truth=val_split)
        m = json.loads((run / METRICS).read_text())
        rows[name] = {
            "mse": v["mse"],
            "mae": v["mae"],
            "coverage80": v["coverage80"],
            "epochs": len(m["history"]),
            "best_epoch": m["best"]["epoch"],
            "minutes": m["wall_seconds_this_run"] / 60,
            "train_nfe": sum(h["train_nfe"] for h in m["history"]),
            "about": f.read_text().splitlines()[0].lstrip("# "),
            "architecture": ModelBundle.load(run / BEST).config.describe(),
            "commit": results.commit(),
            "date": time.strftime("%Y-%m-%d"),
        }
        print(name, json.dumps(rows[name]), flush=True)
        # after each row, merged into the file as it is now: a long run keeps its rows, and runs of other
        # variants in parallel keep theirs
        now = json.loads(old.read_text()) if old.is_file() else r
        now.setdefault("studies", {}).setdefault(study, entry)["rows"][name] = rows[name]
        now["studies"][study].update({k: v for k, v in entry.items() if k != "rows"})
        now.update(device=r["device"], locf=r["locf"])
        r = now
        results.write(out, "physionet2012_ablation", r, markdown(r))
    print(markdown(r))


def describe(exp: ExperimentConfig) -> str:
    t = exp.train
    sigma = "learned per channel" if exp.model.learn_std else "fixed"
    return (
        f"{exp.model.describe()}, σ {sigma}; {t.epochs} epochs (patience {t.patience}), likelihood {t.likelihood!r}, "
        f"channel_balance {t.channel_balance:g}, length_pool {t.length_pool}, IWAE samples {t.iwae_samples}, "
        f"normalize {exp.data.normalize!r}"
    )


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# PhysioNet 2012: ablation on the validation split",
        "",
        f"{r['device']}. Each variant (bench/recipes/physionet/) on top of the base recipe of its study, trained",
        "on this machine for at most the study's minutes (an equal budget) or the recipe's epochs, the best epoch",
        "by validation; scored on validation like the test table (min-max MSE ×10⁻³ and MAE ×10⁻², every",
        "observation at t ≥ 24 h from those before). The test split is never looked at.",
        "",
        f"LOCF on validation: MSE {r['locf']['mse'] * 1e3:.3f}, MAE {r['locf']['mae'] * 1e2:.3f}.",
    ]
    for study, entry in r["studies"].items():
        lines += [
            "",
            f"## {study}",
            "",
            f"Base: {entry['base']}.",
            "",
            "| variant | MSE ×10⁻³ | MAE ×10⁻² | 80% coverage | epochs (best) | minutes | training NFE | commit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, x in sorted(entry["rows"].items(), key=lambda kv: kv[1]["mse"]):
            lines.append(
                f"| {name}: {x['about']} | {x['mse'] * 1e3:.3f} | {x['mae'] * 1e2:.3f} | {100 * x['coverage80']:.1f}% "
                f"| {x['epochs']} ({x['best_epoch']}) | {x['minutes']:.0f} | {x['train_nfe']:,} | {x['commit']} |"
            )
        if entry.get("note"):
            lines += ["", entry["note"]]
    lines += ["", "Reproduce a study: `python -m bench.physionet_ablation --minutes M --study NAME` (its base recipe"]
    lines += ["in models/training/configs/physionet2012.toml at the row's commit)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
