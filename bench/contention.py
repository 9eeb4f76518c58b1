"""Our prediction path against torchode on a quiet CPU and beside a training, in one script: `bench.solver`
at the given batches, run once alone and once while `latentcast train` runs in another process (as a
serving pod shares its cores), each in a fresh process.

    python -m bench.contention [--batches 1,1024] [--reps 15] [--rounds 3]
    # writes bench/results/contention.md and .json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import results

OURS = "ours: predict, posterior mean"
TORCHODE = "C torchode per-series"


def solver_run(batches: str, reps: int, out: Path, tag: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.solver",
        "--device",
        "cpu",
        "--batches",
        batches,
        "--reps",
        str(reps),
        "--anchors",
        "C",
        "--interleave",
    ]
    subprocess.run([*cmd, "--out", str(out), "--tag", tag], check=True, stdout=subprocess.DEVNULL)
    data: dict[str, Any] = json.loads((out / f"solver_cpu{tag}.json").read_text())
    return data


def training(run_dir: Path) -> subprocess.Popen[bytes]:
    """A real training beside the benchmark: pbcseq, on the CPU, for longer than the benchmark takes."""
    cmd = [sys.executable, "-m", "latentcast", "train", "--data", "pbcseq", "--out", str(run_dir)]
    cmd += ["--device", "cpu", "--epochs", "10000", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,1024")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="quiet/contended pairs, alternated")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"quiet": [], "beside a training": []}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for k in range(args.rounds):
            runs["quiet"].append(solver_run(args.batches, args.reps, scratch, f"_q{k}"))
            trainer = training(scratch / f"train{k}")
            try:
                time.sleep(10)  # past its start-up, into the epochs
                if trainer.poll() is not None:
                    raise RuntimeError("the training beside the benchmark stopped early")
                runs["beside a training"].append(solver_run(args.batches, args.reps, scratch, f"_c{k}"))
            finally:
                trainer.kill()
                trainer.wait()
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for cond, rs in runs.items():
        table[cond] = {}
        for b in (int(x) for x in args.batches.split(",")):
            fps = {m: [r["fps"] for run in rs for r in run["rows"] if r["method"] == m and r["batch"] == b and r["fps"]]
                   for m in (OURS, TORCHODE)}  # fmt: skip
            table[cond][b] = {
                "ours": float(np.median(fps[OURS])),
                "torchode": float(np.median(fps[TORCHODE])),
                "ratios": [o / t for o, t in zip(fps[OURS], fps[TORCHODE], strict=True)],
            }
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "table": table,
        "exec_knobs": runs["quiet"][0].get("exec_knobs"),
    }
    results.write(args.out, "contention", r, markdown(r))
    print((args.out / "contention.md").read_text())


def markdown(r: dict[str, Any]) -> str:
    a = r["args"]
    lines = [
        "# Our prediction path vs torchode, quiet and beside a training",
        "",
        f"{r['device']}; `bench.solver` (posterior mean, 50 observations and 50 query times per series) at "
        f"batches {a['batches']}, {a['reps']} repetitions of each, timed in alternation (ours, torchode, ours, "
        f"…: both meet the same load), {a['rounds']} rounds alternating quiet and beside "
        "`latentcast train --data pbcseq --device cpu` in another process (`python -m bench.contention`). "
        f"Solver knobs {r['exec_knobs']}. Forecasts/s, median over rounds; ratio per round.",
        "",
        "| machine | batch | ours | torchode | ours ÷ torchode (each round) |",
        "|---|---|---|---|---|",
    ]
    for cond, by_batch in r["table"].items():
        for b, x in by_batch.items():
            each = ", ".join(f"{v:.2f}×" for v in x["ratios"])
            lines.append(f"| {cond} | {int(b):,} | {x['ours']:,.0f} | {x['torchode']:,.0f} | {each} |")
    lines += ["", f"Commit {r['commit']}, {r['date']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
