"""One history, two dosing plans: the counterfactual picture of the README (issue 26).

    python -m bench.counterfactual --model runs/pk/best.pt   # writes bench/results/counterfactual.png

The model is one trained with `--events dose --static weight` on bench/data/pkpd_synthetic.csv.gz (e.g. by
`python -m bench.interventions --only pkpd_synthetic`). A test subject's first 40 hours are forecast to 96 h
under its own plan after 40 h and under the same plan with every later dose doubled, in one request (two
series ids), beside the subject's samples (those after 40 h were taken under the recorded plan).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import latentcast
from latentcast import read_long_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--subject", default="s0069")
    ap.add_argument("--cut", type=float, default=40.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "counterfactual.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = read_long_table(ROOT / "bench" / "data" / "pkpd_synthetic.csv.gz")
    mine = table[table["id"] == args.subject]
    history = mine[(mine["time"] < args.cut)]
    later = mine[(mine["time"] >= args.cut) & mine["dose"].notna()][["id", "time", "dose", "weight"]]
    plans = {"the recorded plan": later, "every later dose doubled": later.assign(dose=2 * later["dose"])}
    obs = pd.concat([pd.concat([history, p]).assign(id=name) for name, p in plans.items()], ignore_index=True)
    grid = list(np.linspace(1.0, 96.0, 191))
    model = latentcast.load(args.model, device="cpu")
    fc = model.predict(obs, query_times=grid, quantiles=[0.1, 0.5, 0.9])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for (name, plan), colour in zip(plans.items(), ("tab:blue", "tab:red"), strict=True):
        f = fc[fc["id"] == name]
        ax.fill_between(f["time"], f["q0.1"], f["q0.9"], color=colour, alpha=0.18, lw=0)
        ax.plot(f["time"], f["point"], color=colour, lw=1.8, label=f"forecast, {name}")
        for t in plan["time"]:
            ax.axvline(t, color=colour, lw=0.8, ls=":", alpha=0.8)
    seen = mine[mine["conc"].notna()]
    ax.scatter(seen["time"], seen["conc"], color="black", s=22, zorder=5, label="samples (after 40 h: held out)")
    for t in history.loc[history["dose"].notna(), "time"]:
        ax.axvline(t, color="grey", lw=0.8, ls=":")
    ax.axvline(args.cut, color="black", lw=1.0)
    ax.set_xlabel("hours (dotted: doses; the line at 40 h: the last observation given)")
    ax.set_ylabel("concentration (mg/l)")
    ax.set_title(f"{args.subject}: one history, two dosing plans, one request (80% intervals shaded)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
