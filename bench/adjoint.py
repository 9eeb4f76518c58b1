"""Training memory and time per iteration vs the number of solver steps, with and without the adjoint.

One training iteration of a latent ODE (GRU encoder, MLP dynamics, batch of series, loss on 50 target
times) with fixed-step RK4, so the number of steps is exact. Each configuration runs in a fresh process:
peak memory is *measured* — on CUDA with torch.cuda.max_memory_allocated, on the CPU as the growth of
the process's peak resident set (ru_maxrss) over one forward + backward, after setup.

Run: python -m bench.adjoint [--steps 16,64,256,1024] [--batch 128] [--device cpu]
Writes bench/results/adjoint.md and adjoint.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench import results

SPAN = 4.0  # model time covered by the targets
BATCH, OBS, CHANNELS, TARGETS = 128, 30, 3, 50


def worker(steps: int, adjoint: bool, batch: int, device: str, reps: int) -> dict[str, float]:
    from latentcast.models import SolverConfig
    from latentcast.models.training import Batch, LatentODE, ModelConfig

    torch.manual_seed(0)
    dev = torch.device(device)
    solver = SolverConfig(method="rk4", step_size=SPAN / steps, max_num_steps=10**6, adjoint=adjoint)
    cfg = ModelConfig(latent_dim=16, encoder_hidden=64, dynamics_hidden=64, dynamics_depth=2, solver=solver)
    model = LatentODE(cfg, CHANNELS).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t_ctx = torch.sort(torch.rand(batch, OBS), 1).values
    t_tgt = torch.linspace(0, SPAN, TARGETS).expand(batch, -1).contiguous()
    b = Batch(
        ids=[str(i) for i in range(batch)],
        ctx_t=t_ctx - t_ctx[:, :1],
        ctx_x=torch.randn(batch, OBS, CHANNELS),
        ctx_m=torch.ones(batch, OBS, CHANNELS),
        ctx_len=torch.full((batch,), OBS),
        tgt_t=t_tgt,
        tgt_x=torch.randn(batch, TARGETS, CHANNELS),
        tgt_m=torch.ones(batch, TARGETS, CHANNELS),
        tgt_future=torch.ones(batch, TARGETS, dtype=torch.bool),
        anchor=torch.zeros(batch, dtype=torch.float64),
    ).to(dev)

    def step() -> None:
        loss, _ = model.loss(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB → MiB
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        nfe0 = model.dynamics.nfe
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {
        "steps": steps,
        "adjoint": adjoint,
        "peak_mib": peak,
        "seconds": sorted(times)[len(times) // 2],
        "nfe_per_iteration": model.dynamics.nfe - nfe0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="16,64,256,1024")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--adjoint", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.steps), bool(args.adjoint), args.batch, args.device, args.reps)))
        return
    rows = []
    for steps in [int(s) for s in args.steps.split(",")]:
        for adjoint in (0, 1):
            cmd = [
                sys.executable,
                "-m",
                "bench.adjoint",
                "--worker",
                "--steps",
                str(steps),
                "--adjoint",
                str(adjoint),
                "--batch",
                str(args.batch),
                "--device",
                args.device,
                "--reps",
                str(args.reps),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1])
            if out.returncode != 0:
                raise RuntimeError(f"worker failed: {out.stderr[-2000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"steps={steps:<5} adjoint={bool(adjoint)!s:<5} peak={row['peak_mib']:8.1f} MiB "
                f"time={row['seconds'] * 1e3:8.1f} ms nfe={row['nfe_per_iteration']}",
                flush=True,
            )
    device = results.machine(args.device)
    commit = results.commit()
    meta = {
        "device": device,
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
        "commit": commit,
        "batch": args.batch,
        "latent": 16,
        "hidden": 64,
        "targets": TARGETS,
        "rows": rows,
    }
    lines = [
        "# Adjoint: training memory and time per iteration vs solver steps",
        "",
        f"One training iteration (forward + backward + Adam step) of a latent ODE: batch {args.batch}, latent 16,",
        "MLP dynamics 2 × 64, GRU encoder over 30 points, Gaussian likelihood at 50 target times, fixed-step RK4",
        f"over {SPAN:g} time units. Peak memory measured in a fresh process per row "
        + (
            "(torch.cuda.max_memory_allocated over the iteration)."
            if args.device.startswith("cuda")
            else "(growth of peak RSS over the first iteration)."
        ),
        "",
        "| RK4 steps | backprop through solver: peak MiB | time ms | NFE | adjoint: peak MiB | time ms | NFE |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["steps"], r["adjoint"]): r for r in rows}
    for steps in sorted({r["steps"] for r in rows}):
        d, a = by[(steps, False)], by[(steps, True)]
        lines.append(
            f"| {steps} | {d['peak_mib']:.1f} | {d['seconds'] * 1e3:.1f} | {d['nfe_per_iteration']} | "
            f"{a['peak_mib']:.1f} | {a['seconds'] * 1e3:.1f} | {a['nfe_per_iteration']} |"
        )
    lines += [
        "",
        f"Device: {device}; torch {torch.__version__}; {meta['date']}; commit {commit}.",
        "",
        f"Reproduce: `python -m bench.adjoint --steps {args.steps} --batch {args.batch} --device {args.device}`",
    ]
    results.write(args.out, "adjoint", meta, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
