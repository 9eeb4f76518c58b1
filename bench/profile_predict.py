"""Where the prediction path spends its time: torch.profiler over one `LatentODE.predict` call.

Same model and inputs as bench/solver.py. Prints wall time per call, kernel launches and host syncs
per call, and the top operators by self time on the host and on the device.

Run: python -m bench.profile_predict [--device cuda] [--batch 1024] [--samples 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.anchors import make_inputs
from bench.solver import batch_of, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    ours, _ = build(device)
    t_obs, x, tq = make_inputs(args.batch, device, torch.Generator().manual_seed(0))
    batch, q_rel = batch_of(t_obs, x, tq)

    def call() -> None:
        ours.predict(batch, q_rel, num_samples=args.samples, levels=(0.1, 0.5, 0.9) if args.samples else ())
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        call()
    t0 = time.perf_counter()
    for _ in range(5):
        call()
    wall = (time.perf_counter() - t0) / 5
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        call()
    ev = prof.key_averages()
    launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    syncs = sum(e.count for e in ev if "Synchronize" in e.key or e.key == "cudaMemcpyAsync")
    print(f"batch {args.batch}, samples {args.samples}: {wall * 1e3:.2f} ms/call, {args.batch / wall:,.0f} forecasts/s")
    print(f"kernel launches {launches}, host syncs/copies {syncs}")
    print(ev.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if device.type == "cuda":
        print(ev.table(sort_by="self_device_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
