"""Does a two-process training ever abort at exit? The DDP test module `--tests` times in a row, then
`torchrun --nproc_per_node=2 -m latentcast train` on a user CSV (Oxboys, years) `--runs` times; each
counted as an abort when it exits non-zero or prints "terminate called" (gloo's teardown).

    python -m bench.ddp_exits [--tests 30] [--runs 10]    # writes bench/results/ddp_exits.md and .json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import results

ROOT = Path(__file__).resolve().parents[1]
ABORT = "terminate called"


def run(cmd: list[str], timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    text = proc.stdout + proc.stderr
    return {"rc": proc.returncode, "seconds": time.perf_counter() - t0, "abort": ABORT in text, "tail": text[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ddp_exits", description=__doc__.split("\n")[0])
    ap.add_argument("--tests", type=int, default=30)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    ddp_test = "tests/models/training/test_distributed.py"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ddp_test]
    tests = []
    for k in range(args.tests):
        tests.append(run(pytest, 600))
        print(f"test {k + 1}: rc {tests[-1]['rc']}, abort {tests[-1]['abort']}", flush=True)
    trainings = []
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.runs):
            cmd = [torchrun, "--nproc_per_node=2", "-m", "latentcast", "train"]
            cmd += ["--data", "bench/data/oxboys.csv.gz", "--channels", "height", "--time-unit", "year"]
            cmd += ["--device", "cpu", "--epochs", "3", "--out", f"{tmp}/run{k}"]
            trainings.append(run(cmd, 900))
            ok = (Path(tmp) / f"run{k}" / "best.pt").exists()
            trainings[-1]["best_written"] = ok
            print(
                f"torchrun {k + 1}: rc {trainings[-1]['rc']}, abort {trainings[-1]['abort']}, best.pt {ok}", flush=True
            )
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "tests": tests,
        "trainings": trainings,
    }
    results.write(args.out, "ddp_exits", r, markdown(r))
    print((args.out / "ddp_exits.md").read_text())


def markdown(r: dict[str, Any]) -> str:
    def count(rows: list[dict[str, Any]]) -> str:
        bad = sum(x["rc"] != 0 or x["abort"] for x in rows)
        secs = [x["seconds"] for x in rows]
        return f"{len(rows)} | {bad} | {min(secs):.0f}–{max(secs):.0f}" if rows else "0 | 0 | —"

    return "\n".join(
        [
            "# Two-process training: exits",
            "",
            f"{r['device']}; `python -m bench.ddp_exits` (module docstring). An abort: a non-zero exit or "
            '"terminate called" in the output.',
            "",
            "| what | runs | aborts or failures | seconds each |",
            "|---|---|---|---|",
            f"| `pytest tests/models/training/test_distributed.py` | {count(r['tests'])} |",
            f"| `torchrun --nproc_per_node=2 -m latentcast train` on Oxboys | {count(r['trainings'])} |",
            "",
            "Every torchrun run wrote best.pt: " + str(all(x.get("best_written") for x in r["trainings"])) + ".",
            "",
            f"Commit {r['commit']}, {r['date']}.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
