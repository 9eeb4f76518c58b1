"""A synthetic one-compartment pharmacokinetic table where the truth is known (issue 26's third table).

Each subject has a static weight (kg) and an elimination rate; bolus doses (mg) arrive at irregular
hours; the concentration is the superposition of the doses' decays,

    C(t) = Σ_{t_d < t} (dose_d / V) · exp(−k · (t − t_d)),   V = v_per_kg · weight,

observed sparsely (3–8 samples per subject at distinct random hours) with 10% multiplicative noise. A
sample at a dose's time is taken before the dose (latentcast's events count from just after their time). The long
table has the shape `latentcast train --events dose --static weight` will read: `id, time, conc, dose,
weight`, a dose row carrying only `dose` (and `weight`), a sample row only `conc` (and `weight`).

    python -m bench.pkpd [--subjects 200] [--seed 0]    # writes bench/data/pkpd_synthetic.csv.gz
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


def make_pkpd(subjects: int = 200, seed: int = 0) -> pd.DataFrame:
    """The long table (id, time, conc, dose, weight), seeded."""
    rng = np.random.default_rng(seed)
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
        conc = np.round(conc * np.exp(rng.normal(0, NOISE, len(conc))), 4)
        sid = f"s{s:04d}"
        rows += [{"id": sid, "time": t, "dose": d, "weight": weight} for t, d in zip(dose_times, doses, strict=True)]
        rows += [{"id": sid, "time": t, "conc": c, "weight": weight} for t, c in zip(sample_times, conc, strict=True)]
    frame = pd.DataFrame(rows, columns=["id", "time", "conc", "dose", "weight"])
    return frame.sort_values(["id", "time"], kind="stable").reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    frame = make_pkpd(args.subjects, args.seed)
    out = ROOT / "bench" / "data" / "pkpd_synthetic.csv.gz"
    frame.to_csv(out, index=False)
    print(
        f"wrote {out}: {frame['id'].nunique()} subjects, {frame['conc'].notna().sum()} samples, "
        f"{frame['dose'].notna().sum()} doses"
    )


if __name__ == "__main__":
    main()
