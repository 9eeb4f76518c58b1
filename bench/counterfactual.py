"""One history, two plans: the counterfactual pictures of the README (issue 26).

    python -m bench.counterfactual --model RUN/best.pt                              # counterfactual.png
    python -m bench.counterfactual --table remifentanil --model RUN/best.pt        # counterfactual_infusion.png

`pkpd_synthetic` (a model trained with `--events dose --static weight` on bench/data/pkpd_synthetic.csv.gz,
e.g. by `python -m bench.interventions --only pkpd_synthetic`): a test subject's first 40 hours are
forecast to 96 h under its own plan after 40 h and under the same plan with every later dose doubled.
`remifentanil` (trained with `--levels rate --static age,…` on bench/data/remifentanil_rate.csv.gz): a
subject's first minutes, forecast under its recorded infusion rates and with the infusion stopped at the
cut. Both plans go in one request (two series ids), beside the subject's samples (those after the cut
were taken under the recorded plan).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

import latentcast
from latentcast import read_long_table

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    file: str
    column: str  # the input the plans differ in
    subject: str
    cut: float
    end: float
    unit: str
    changed: str  # the second plan's name
    change: Callable[[pd.DataFrame, float], pd.DataFrame]  # the recorded inputs after the cut → the second plan


CASES = {
    "pkpd_synthetic": Case(
        "pkpd_synthetic.csv.gz", "dose", "s0069", 40.0, 96.0, "hours", "every later dose doubled",
        lambda later, cut: later.assign(dose=2 * later["dose"]),
    ),
    "remifentanil": Case(
        "remifentanil_rate.csv.gz", "rate", "8", 8.0, 60.0, "minutes", "the infusion stopped at the cut",
        lambda later, cut: later.iloc[:1].assign(time=cut, rate=0.0),
    ),
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--table", choices=sorted(CASES), default="pkpd_synthetic")
    ap.add_argument("--subject", default=None)
    ap.add_argument("--cut", type=float, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    case = CASES[args.table]
    subject = args.subject or case.subject
    cut = case.cut if args.cut is None else args.cut
    name = "counterfactual.png" if args.table == "pkpd_synthetic" else "counterfactual_infusion.png"
    out = args.out or ROOT / "bench" / "results" / name
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = read_long_table(ROOT / "bench" / "data" / case.file)
    mine = table[table["id"].astype(str) == subject]
    history = mine[(mine["time"] < cut)]
    model = latentcast.load(args.model, device="cpu")
    keep = ["id", "time", case.column, *model.static]
    later = mine[(mine["time"] >= cut) & mine[case.column].notna()][keep]
    later = later[later[case.column].diff().fillna(1.0) != 0] if case.column == "rate" else later  # the changes
    plans = {"the recorded plan": later, case.changed: case.change(later, cut)}
    obs = pd.concat([pd.concat([history, p]).assign(id=n) for n, p in plans.items()], ignore_index=True)
    grid = list(np.linspace(float(mine["time"].min()), case.end, 191))
    fc = model.predict(obs, query_times=grid, quantiles=[0.1, 0.5, 0.9])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for (n, plan), colour in zip(plans.items(), ("tab:blue", "tab:red"), strict=True):
        f = fc[fc["id"] == n]
        ax.fill_between(f["time"], f["q0.1"], f["q0.9"], color=colour, alpha=0.18, lw=0)
        ax.plot(f["time"], f["point"], color=colour, lw=1.8, label=f"forecast, {n}")
        for t in plan["time"]:
            ax.axvline(t, color=colour, lw=0.8, ls=":", alpha=0.8)
    seen = mine[mine["conc"].notna()]
    ax.scatter(seen["time"], seen["conc"], color="black", s=22, zorder=5, label=f"samples (after {cut:g}: held out)")
    for t in history.loc[history[case.column].notna(), "time"]:
        ax.axvline(t, color="grey", lw=0.8, ls=":")
    ax.axvline(cut, color="black", lw=1.0)
    ax.set_xlabel(f"{case.unit} (dotted: {case.column} changes; the line at {cut:g}: the last observation given)")
    ax.set_ylabel("concentration")
    ax.set_title(f"subject {subject}: one history, two plans, one request (80% intervals shaded)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
