"""How often the default guards refuse a record or answer it with a warning, per data set: every record
of each forecast as a user would ask for it, through `Model.predict(on_error="skip")` with the default
limits (the server's defaults: LATENTCAST_MAX_HORIZON_FACTOR 2, UNUSUAL_VALUE_SCALES 20,
UNUSUAL_OUTPUT_SCALES 50; the same checks, models/guard.py).

- PhysioNet 2012, the embedded model: the test split (2,400 records) and set-c (4,000 records), each
  record's first 24 h as context and its later observation times as queries (a record with none: 36 h);
- pbcseq, the embedded model: every patient's last visit from the ones before (one visit: a year on);
- every table in bench/data: a model trained on it with `latentcast.fit` and no other option (the
  README's "your data" path), then every series' second half from its first half (one point: the
  series' own time plus the median training span).

    python -m bench.guard_rates [--only physionet,pbcseq,oxboys]   # writes bench/results/guard_rates.md
"""

from __future__ import annotations

import argparse
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import latentcast
from bench import results
from bench.your_data import DATA, SETS
from latentcast.models.training.datasets.pbcseq import CHANNELS as PBC_CHANNELS
from latentcast.models.training.datasets.pbcseq import read_pbcseq
from latentcast.models.training.datasets.physionet2012 import CHANNELS, TIME, protocol_split, read_records

PHYSIONET = Path("../shared/data/physionet2012")


def tally(fc: pd.DataFrame, n: int) -> dict[str, Any]:
    """Records, refused (with their reasons), and records with a warning by kind."""
    by_kind: dict[str, set[Any]] = {}
    for w in fc.attrs["warnings"]:
        if w.get("id") is not None:
            by_kind.setdefault(w["kind"], set()).add(w["id"])
    warned = set().union(*by_kind.values()) if by_kind else set()
    reasons: dict[str, int] = {}
    for e in fc.attrs["errors"]:
        key = e["msg"].split(": ", 1)[-1][:90]
        reasons[key] = reasons.get(key, 0) + 1
    examples = [f"{w['id']}: {w['msg'][:160]}" for w in fc.attrs["warnings"] if w.get("id") is not None][:3]
    return {
        "records": n,
        "refused": len(fc.attrs["errors"]),
        "refused_reasons": reasons,
        "warned": len(warned),
        "warned_by_kind": {k: len(v) for k, v in sorted(by_kind.items())},
        "examples": examples,
    }


def _quiet_predict(model: latentcast.Model, obs: pd.DataFrame, queries: Any) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentcast.LatentcastWarning)
        return model.predict(obs, queries, quantiles=(0.1, 0.9), on_error="skip", extra_columns="ignore")


def physionet(which: str) -> dict[str, Any]:
    series = read_records(PHYSIONET)
    if which == "test":
        ids = set(protocol_split(series)[2])
    else:
        with tarfile.open(PHYSIONET / "set-c.tar.gz") as tar:
            ids = {Path(m.name).stem for m in tar if m.name.endswith(".txt")}
    obs, query = [], []
    for s in series:
        if s.id not in ids:
            continue
        hours = s.times / TIME.scale
        c = int(s.n_context or len(s))
        obs.append(pd.DataFrame(s.values[:c], columns=CHANNELS).assign(id=s.id, time=hours[:c]))
        later = hours[c:] if c < len(s) else np.array([36.0])
        query.append(pd.DataFrame({"id": s.id, "time": later}))
    model = latentcast.load("physionet2012", device="cpu")
    fc = _quiet_predict(model, pd.concat(obs), pd.concat(query))
    return tally(fc, len(obs))


def pbcseq() -> dict[str, Any]:
    frame = read_pbcseq()[["id", "time", *PBC_CHANNELS]]
    last = frame.groupby("id")["time"].transform("max")
    many = frame.groupby("id")["time"].transform("size") > 1
    obs = frame[(frame["time"] < last) | ~many]
    query = frame[many & (frame["time"] == last)][["id", "time"]]
    single = frame[~many][["id", "time"]].assign(time=lambda d: d["time"] + 365.0)
    fc = _quiet_predict(latentcast.load("pbcseq", device="cpu"), obs, pd.concat([query, single]))
    return tally(fc, frame["id"].nunique())


def table(name: str) -> dict[str, Any]:
    spec = next(s for s in SETS if s.name == name)
    frame = pd.read_csv(DATA / spec.file, dtype={"id": str})
    t0 = time.perf_counter()
    model = latentcast.fit(frame, channels=list(spec.channels), time_unit=spec.time_unit, device="cpu")
    seconds = time.perf_counter() - t0
    frame = frame.sort_values(["id", "time"])
    rank = frame.groupby("id").cumcount()
    size = frame.groupby("id")["time"].transform("size")
    first = frame[(rank < np.maximum(size // 2, 1))]
    second = frame[(rank >= size // 2) & (size > 1)][["id", "time"]]
    ones = frame[size == 1][["id", "time"]]
    span = float(model.bundle.data.get("max_span", 1.0)) / model.bundle.time.scale / 2  # in the model's unit
    if pd.api.types.is_numeric_dtype(frame["time"]):
        ones = ones.assign(time=ones["time"] + span)
    else:
        ones = ones.assign(time=pd.to_datetime(ones["time"], utc=True) + pd.Timedelta(seconds=span * 86400.0))
    fc = _quiet_predict(model, first[["id", "time", *spec.channels]], pd.concat([second, ones]))
    out = tally(fc, frame["id"].nunique())
    out["training_seconds"] = seconds
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.guard_rates", description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated: physionet, pbcseq, and bench/data table names")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    want = set(args.only.split(",")) if args.only else None
    rows: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[str, Any]] = [
        ("PhysioNet 2012 test split", lambda: physionet("test")),
        ("PhysioNet 2012 set-c", lambda: physionet("set-c")),
        ("pbcseq (embedded model)", pbcseq),
    ]
    jobs += [(f"{s.name} ({s.unit})", lambda n=s.name: table(n)) for s in SETS]
    for label, job in jobs:
        if want and not any(w in label.lower() for w in want):
            continue
        t0 = time.perf_counter()
        rows[label] = job()
        rows[label]["seconds"] = time.perf_counter() - t0
        print(label, rows[label], flush=True)
    result: dict[str, Any] = {"device": results.machine("cpu"), "commit": results.commit()}
    result["date"] = time.strftime("%Y-%m-%d")
    result["data_sets"] = rows
    results.write(args.out, "guard_rates", result, markdown(result))
    print((args.out / "guard_rates.md").read_text())


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Refusals and warnings under the default guards, per data set",
        "",
        "Every record forecast as a user would ask (`python -m bench.guard_rates`, module docstring), with the",
        "default limits: refused = what the model cannot represent (not finite, ≤ 0 on a log channel, times out of",
        "order, past 2 × the longest training span); a warning = answered, with something unusual said: a value",
        "outside its channel's physical bounds (set aside), more than 20 of the model's scales from the training",
        "data, or an answer more than 50 out.",
        "",
        "| data | records | refused | with a warning | warnings by kind (records) |",
        "|---|---|---|---|---|",
    ]
    for name, x in r["data_sets"].items():
        n = x["records"]
        kinds = ", ".join(f"{k} {v}" for k, v in x["warned_by_kind"].items()) or "—"
        lines.append(
            f"| {name} | {n:,} | {x['refused']} ({100 * x['refused'] / n:.1f}%) | {x['warned']} "
            f"({100 * x['warned'] / n:.1f}%) | {kinds} |"
        )
    lines += ["", "Refusal reasons and example warnings:", ""]
    for name, x in r["data_sets"].items():
        if x["refused_reasons"]:
            lines.append(f"- {name}, refused: " + "; ".join(f"{v} × {k}" for k, v in x["refused_reasons"].items()))
        for e in x["examples"][:2]:
            lines.append(f"- {name}, e.g. {e}")
    lines += ["", f"Measured on {r['device']}, commit {r['commit']}, {r['date']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
