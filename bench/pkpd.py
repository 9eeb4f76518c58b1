"""A synthetic one-compartment pharmacokinetic table where the truth is known (issue 26's third table).

Each subject has a static weight (kg) and an elimination rate; bolus doses (mg) arrive at irregular
hours; the concentration is the superposition of the doses' decays,

    C(t) = Σ_{t_d < t} (dose_d / V) · exp(−k · (t − t_d)),   V = v_per_kg · weight,

observed sparsely (3–8 samples per subject at distinct random hours) with 10% multiplicative noise. A
sample at a dose's time is taken before the dose (latentcast's events count from just after their time). The long
table has the shape `latentcast train --events dose --static weight` will read: `id, time, conc, dose,
weight`, a dose row carrying only `dose` (and `weight`), a sample row only `conc` (and `weight`).

With `infusion`, each subject also receives an intravenous infusion at a piecewise-constant rate (mg/h,
changed 2–4 times at random hours, sometimes to 0), whose concentration Σ_k Δr_k / (V k) · (1 −
exp(−k (t − t_k))) adds to the doses'; a `rate` column holds each change (`latentcast train --levels rate`).

    python -m bench.pkpd [--subjects 200] [--seed 0] [--infusion]
    # writes bench/data/pkpd_synthetic.csv.gz (pkpd_infusion.csv.gz)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
V_PER_KG = 0.7  # l/kg: the volume of distribution per kg of body weight
NOISE = 0.10  # multiplicative (log-normal) sampling noise


def concentration(times: np.ndarray, dose_times: np.ndarray, doses: np.ndarray, volume: float, k: float) -> np.ndarray:
    """C(t) (mg/l) at `times` (h) from bolus `doses` (mg) at `dose_times` (h): the decays of the doses
    before each time, summed."""
    dt = times[:, None] - dose_times[None, :]  # (T, n_doses)
    return np.where(dt > 0, doses[None, :] / volume * np.exp(-k * np.clip(dt, 0, None)), 0.0).sum(axis=1)


def infused(times: np.ndarray, change_times: np.ndarray, rates: np.ndarray, volume: float, k: float) -> np.ndarray:
    """C(t) (mg/l) at `times` (h) from an infusion whose rate (mg/h) becomes `rates` at `change_times` (h)
    and holds until the next change (0 before the first)."""
    steps = np.diff(np.concatenate([[0.0], rates]))  # (n_changes,) each change of the rate
    dt = times[:, None] - change_times[None, :]
    return np.where(dt > 0, steps[None, :] / (volume * k) * (1 - np.exp(-k * np.clip(dt, 0, None))), 0.0).sum(axis=1)


def make_pkpd(subjects: int = 200, seed: int = 0, infusion: bool = False) -> pd.DataFrame:
    """The long table (id, time, conc, dose, weight[, rate]), seeded; the infusions draw from their own
    generator, so the doses and samples are those of the table without them."""
    rng = np.random.default_rng(seed)
    drip = np.random.default_rng([seed, 1])
    rows = []
    for s in range(subjects):
        weight = float(np.round(rng.uniform(50, 110), 1))
        k = float(np.log(2) / rng.uniform(4.0, 12.0))  # half-life 4–12 h
        n_doses = int(rng.integers(2, 7))
        dose_times = np.sort(np.round(rng.uniform(0, 72, n_doses), 2))
        dose_times[0] = 0.0
        doses = np.round(rng.choice([100.0, 200.0, 300.0, 400.0], n_doses) * rng.uniform(0.9, 1.1, n_doses), 1)
        sample_times = np.unique(np.round(rng.uniform(0.5, 96, int(rng.integers(3, 9))), 2))
        conc = concentration(sample_times, dose_times, doses, V_PER_KG * weight, k)
        sid = f"s{s:04d}"
        if infusion:
            n = int(drip.integers(2, 5))
            change_times = np.sort(np.round(drip.uniform(0, 84, n), 2))
            rates = drip.choice([0.0, 10.0, 20.0, 40.0], n)
            conc = conc + infused(sample_times, change_times, rates, V_PER_KG * weight, k)
            rows += [
                {"id": sid, "time": t, "rate": r, "weight": weight} for t, r in zip(change_times, rates, strict=True)
            ]
        conc = np.round(conc * np.exp(rng.normal(0, NOISE, len(conc))), 4)
        rows += [{"id": sid, "time": t, "dose": d, "weight": weight} for t, d in zip(dose_times, doses, strict=True)]
        rows += [{"id": sid, "time": t, "conc": c, "weight": weight} for t, c in zip(sample_times, conc, strict=True)]
    columns = ["id", "time", "conc", "dose", "weight"] + (["rate"] if infusion else [])
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["id", "time"], kind="stable").reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--infusion", action="store_true", help="add piecewise-constant infusions (a `rate` column)")
    args = ap.parse_args()
    frame = make_pkpd(args.subjects, args.seed, args.infusion)
    out = ROOT / "bench" / "data" / ("pkpd_infusion.csv.gz" if args.infusion else "pkpd_synthetic.csv.gz")
    frame.to_csv(out, index=False)
    print(
        f"wrote {out}: {frame['id'].nunique()} subjects, {frame['conc'].notna().sum()} samples, "
        f"{frame['dose'].notna().sum()} doses"
    )


if __name__ == "__main__":
    main()
