"""Our prediction path against the anchor solvers, in one process, on one device, with shared weights.

Shapes as in ../shared/bench/anchor_solvers.py (see bench/anchors.py). Ours: `LatentODE.predict`
(GRU encoder, per-series dopri5 with dense output, decoder), once for the posterior-mean trajectory
(the same work as the anchors) and once with 32 latent samples and three quantiles (what the service
computes). Each method's error is measured against a float64 reference solve (rtol 1e-10) of the same
model: max |Δ| and max |Δ| / max |reference|.

Run: python -m bench.solver [--device cpu|cuda] [--batches 1,64,1024,8192]
Writes bench/results/solver_<cpu|gpu>.md and .json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import results
from bench.anchors import (
    CHANNELS,
    HIDDEN,
    LATENT,
    N_OBS,
    AnchorModel,
    make_inputs,
    one_at_a_time,
    rk4_graph,
    union_grid,
    with_torchode,
)
from latentcast.models import SolverConfig, solve
from latentcast.models.solve import solve_per_series
from latentcast.models.training import Batch, LatentODE, ModelConfig

ROOT = Path(__file__).resolve().parents[1]


ENCODER_ALONE = "E encoder alone (GRU, no solve): a bound on every method"


def build(device: torch.device) -> tuple[LatentODE, AnchorModel]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        latent_dim=LATENT,
        encoder="gru",
        encoder_hidden=2 * LATENT,
        anchor="last",
        dynamics_hidden=HIDDEN,
        dynamics_depth=2,
        activation="elu",
        decoder_hidden=0,
        solver=SolverConfig(method="dopri5", rtol=1e-3, atol=1e-4, max_num_steps=10_000),
    )
    ours = LatentODE(cfg, CHANNELS).to(device).eval()
    gru = torch.nn.GRU(CHANNELS + 1, 2 * LATENT, batch_first=True).to(device)
    anchor = AnchorModel(ours.dynamics.net, ours.decoder.net, gru).eval()
    return ours, anchor


def batch_of(t_obs: torch.Tensor, x: torch.Tensor, tq: torch.Tensor) -> tuple[Batch, torch.Tensor]:
    b = x.shape[0]
    last = t_obs[:, -1:]
    ones = torch.ones_like(x)
    batch = Batch(
        ids=[str(i) for i in range(b)],
        ctx_t=t_obs - last,
        ctx_x=x,
        ctx_m=ones,
        ctx_len=torch.full((b,), N_OBS, device=x.device),
        tgt_t=t_obs - last,
        tgt_x=x,
        tgt_m=ones,
        tgt_future=torch.zeros(b, N_OBS, dtype=torch.bool, device=x.device),
        anchor=torch.zeros(b, dtype=torch.float64),
    )
    return batch, tq - last


def timeit(fn: Callable[[], Any], device: torch.device, reps: int) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def timeit_pair(fa: Callable[[], Any], fb: Callable[[], Any], device: torch.device, reps: int) -> tuple[float, float]:
    """Median seconds of two functions timed in alternation (a, b, a, b, …), so that both meet the same
    load from whatever else runs on the machine."""
    times: tuple[list[float], list[float]] = ([], [])
    for k in range(2 * reps + 2):
        fn = fa if k % 2 == 0 else fb
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= 2:  # the first call of each warms up
            times[k % 2].append(time.perf_counter() - t0)
    return sorted(times[0])[reps // 2], sorted(times[1])[reps // 2]


@torch.inference_mode()
def reference(f: torch.nn.Module, dec: torch.nn.Module, z0: torch.Tensor, q_rel: torch.Tensor) -> torch.Tensor:
    """float64, rtol 1e-10: the 'true' decoded trajectory of z' = f(z) from z0 at these times."""
    f64, dec64 = copy.deepcopy(f).double(), copy.deepcopy(dec).double()
    cfg = SolverConfig(rtol=1e-10, atol=1e-12, max_num_steps=100_000)
    return dec64(solve_per_series(lambda t, z: f64(z), z0.double(), q_rel.double(), cfg).z)


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    diff = (out.double() - ref).abs()
    return {"max_abs_err": float(diff.max()), "max_rel_err": float(diff.max() / ref.abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="1,64,1024,8192")
    ap.add_argument("--single", type=int, default=32, help="series for the one-at-a-time anchor")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--window", type=int, default=0, help="override the solver's query window (0: device default)")
    ap.add_argument("--sync-every", type=int, default=0, help="override steps between host syncs (0: default)")
    ap.add_argument("--graphs", type=int, default=-1, help="1/0: force CUDA graphs on/off (-1: default)")
    ap.add_argument(
        "--interleave", action="store_true", help="time torchode and ours in alternation (same machine load)"
    )
    ap.add_argument("--ours-only", action="store_true", help="skip the anchors (for comparing our own variants)")
    ap.add_argument("--anchors", default="A,B,C,D", help="which anchors to run (letters, comma-separated)")
    args = ap.parse_args()
    device = torch.device(args.device)
    knobs = solve.EXEC_DEFAULTS[device.type]
    if args.window:
        knobs["window"] = args.window
        knobs["full_window"] = 0
    if args.sync_every:
        knobs["sync_every"] = args.sync_every
    if args.graphs >= 0:
        knobs["graphs"] = args.graphs
    print(f"solver execution knobs on {device.type}: {knobs}", flush=True)
    ours, anchor = build(device)
    gen = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []

    def add(method: str, b: int, seconds: float | None, err: dict[str, float] | None = None, note: str = "") -> None:
        row = {
            "method": method,
            "batch": b,
            "seconds": seconds,
            "fps": b / seconds if seconds else None,
            **(err or {}),
            "note": note,
        }
        rows.append(row)
        fps = f"{row['fps']:,.0f}" if row["fps"] else "-"
        e = f"max rel err {row['max_rel_err']:.1e}" if "max_rel_err" in row else ""
        print(f"{method:<44} batch={b:<6} forecasts/s={fps:<12} {e} {note}", flush=True)

    anchors = set() if args.ours_only else set(args.anchors.split(","))
    if "A" in anchors:
        t_obs, x, tq = make_inputs(args.single, device, gen)
        t = timeit(lambda: one_at_a_time(anchor, t_obs, x, tq), device, max(1, args.reps // 2))
        add("A torchdiffeq one at a time", 1, t / args.single)
    for b in [int(v) for v in args.batches.split(",")]:
        t_obs, x, tq = make_inputs(b, device, gen)
        batch, q_rel = batch_of(t_obs, x, tq)
        with torch.inference_mode():
            z0_ours = ours.encode(batch)[0]
            z0_anchor = anchor.encode(t_obs, x)  # the anchors encode with their own GRU
        ref = reference(anchor.f, anchor.dec, z0_ours, q_rel)
        ref_anchor = reference(anchor.f, anchor.dec, z0_anchor, tq - 1)
        if b <= 1024 and "B" in anchors:
            out = union_grid(anchor, t_obs, x, tq)
            t = timeit(functools.partial(union_grid, anchor, t_obs, x, tq), device, max(1, args.reps // 2))
            add("B torchdiffeq union of query times", b, t, errors(out, ref_anchor))

        def ours_mean(batch: Batch = batch, q_rel: torch.Tensor = q_rel) -> torch.Tensor:
            return ours.predict(batch, q_rel, num_samples=0).mean

        t_ours: float | None = None
        if "C" in anchors:
            try:
                out = with_torchode(anchor, t_obs, x, tq)
                ode = functools.partial(with_torchode, anchor, t_obs, x, tq)
                if args.interleave:
                    t, t_ours = timeit_pair(ode, ours_mean, device, args.reps)
                else:
                    t = timeit(ode, device, args.reps)
                add("C torchode per-series", b, t, errors(out, ref_anchor))
            except Exception as exc:
                add("C torchode per-series", b, None, note=f"failed: {type(exc).__name__}: {exc}"[:100])
        if "D" in anchors:
            fn = rk4_graph(anchor, t_obs, x, tq)
            out = fn()
            t = timeit(fn, device, args.reps * 4)
            kind = ", CUDA graph" if device.type == "cuda" else ", eager"
            add("D rk4 64 steps" + kind, b, t, errors(out, ref_anchor))
        out = ours_mean()
        t = t_ours if t_ours is not None else timeit(ours_mean, device, args.reps)
        add("ours: predict, posterior mean", b, t, errors(out, ref))

        def ours_quantiles(batch: Batch = batch, q_rel: torch.Tensor = q_rel) -> torch.Tensor:
            return ours.predict(batch, q_rel, num_samples=32, levels=(0.1, 0.5, 0.9)).quantiles

        if b <= 8192:
            t = timeit(ours_quantiles, device, max(1, args.reps // 2))
            add("ours: predict, 32 samples + 3 quantiles", b, t)

        def encoder_alone(batch: Batch = batch) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.inference_mode():
                return ours.encode(batch)

        add(ENCODER_ALONE, b, timeit(encoder_alone, device, args.reps))
    result = {
        "device": results.machine(device),
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
        "commit": results.commit(),
        "argv": sys.argv[1:],
        "exec_knobs": dict(knobs),
        "rows": rows,
    }
    results.write(args.out, f"solver_{'gpu' if device.type == 'cuda' else 'cpu'}{args.tag}", result, markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    rows = r["rows"]
    batches = sorted({x["batch"] for x in rows if not x["method"].startswith("A ")})
    methods = list(dict.fromkeys(x["method"] for x in rows))
    by = {(x["method"], x["batch"]): x for x in rows}
    lines = [
        f"# Solver: our prediction path vs the anchors, on {r['device']}",
        "",
        f"torch {r['torch']}, {r['date']}, commit {r['commit']}, solver knobs {r.get('exec_knobs')}. "
        "Forecasts per second (one forecast = one "
        "series answered at its 50 query times); in brackets, max |error| / max |reference| against a "
        "float64 rtol 1e-10 solve of the same model.",
        "",
        "| method | " + " | ".join(f"batch {b:,}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    a = next((x for x in rows if x["method"].startswith("A ")), None)
    if a is not None:
        lines.append(f"| {a['method']} | {a['fps']:,.0f} (batch 1) |" + " |" * (len(batches) - 1))
    for m in methods:
        if m.startswith("A "):
            continue
        cells = []
        for b in batches:
            x = by.get((m, b))
            if x is None or not x["fps"]:
                cells.append("—" if x is None else "failed")
            else:
                err = f" ({x['max_rel_err']:.0e})" if "max_rel_err" in x else ""
                cells.append(f"{x['fps']:,.0f}{err}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    ours = "ours: predict, posterior mean"
    lines += [
        "",
        "Ratios (ours, posterior mean ÷ anchor):",
        "",
        "| batch | ÷ torchode | ÷ torchdiffeq union | ÷ RK4 | encoder alone ÷ union |",
        "|---|---|---|---|---|",
    ]
    for b in batches:
        o = by.get((ours, b))
        if not o:
            continue

        def ratio(prefix: str, b: int = b, o: dict[str, Any] = o) -> str:
            x = next((v for (m, bb), v in by.items() if m.startswith(prefix) and bb == b and v["fps"]), None)
            return f"{o['fps'] / x['fps']:.2f}×" if x else "—"

        enc, union = (
            by.get((ENCODER_ALONE, b)),
            next((v for (m, bb), v in by.items() if m.startswith("B ") and bb == b), None),
        )
        bound = f"{enc['fps'] / union['fps']:,.0f}×" if enc and union and union["fps"] else "—"
        lines.append(f"| {b:,} | {ratio('C ')} | {ratio('B ')} | {ratio('D ')} | {bound} |")
    lines += [
        "",
        "The last column is the most any method that encodes with this GRU could reach against the union "
        "approach here: the encoder alone, with no solve at all, divided by the union approach's rate.",
        "",
        f"Reproduce: `python -m bench.solver {' '.join(r['argv'])}`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
