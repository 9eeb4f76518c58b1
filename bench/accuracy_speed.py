"""Precision against speed at test time (Chen et al. 2018, Fig. 3), per embedded model, on this machine.

For each tolerance (rtol swept from 1e-1 to 1e-7, atol = rtol / 10, then the service's named levels),
the first --error-series test series of the model's data set are forecast from their context window as
the service does (32 latent samples, float32) and compared with a float64 solve at rtol 1e-10 of the
same model and draws: the solver's error (normalised units: the model's per-channel standardisation),
the forecast's error against the held-out data (NMSE, to show when the tolerance starts to matter),
vector-field evaluations per trajectory, and latency for one series and for a batch of 1,024.

    python -m bench.accuracy_speed [--models spirals,pbcseq,physionet2012] [--error-series 64]

writes bench/results/accuracy_speed.md (and .json).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import results
from latentcast.models import Forecaster, ModelBundle, PackedSeries, SolverConfig
from latentcast.models.training import build_experiment, forecast_contexts, load_dataset

ROOT = Path(__file__).resolve().parents[1]
SWEEP = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
SAMPLES = 32  # the service's default
BATCH = 1024


def _packed(name: str) -> tuple[PackedSeries, np.ndarray]:
    """The model's test series, context → the rest; and the held-out values (M, D), raw units."""
    exp = build_experiment(name)
    series = load_dataset(exp.data).test
    ctx = forecast_contexts(series, exp.train.val_task)
    keep = [i for i, (s, c) in enumerate(zip(series, ctx, strict=True)) if c < len(s)]
    series, ctx = [series[i] for i in keep], [ctx[i] for i in keep]
    packed = PackedSeries.from_series(series, [s.times[c:] for s, c in zip(series, ctx, strict=True)], ctx)
    truth = np.concatenate([s.values[c:] for s, c in zip(series, ctx, strict=True)])
    return packed, truth


def _tile(packed: PackedSeries, n: int) -> PackedSeries:
    """The first n series, cycling through the set when it has fewer."""
    parts, left = [], n
    while left > 0:
        k = min(left, len(packed))
        parts.append(packed.take(0, k))
        left -= k
    return PackedSeries.concat(parts) if len(parts) > 1 else parts[0]


def _seconds(fc: Forecaster, packed: PackedSeries, solver: SolverConfig, repeats: int, warm_up: bool) -> float:
    """Median wall time of `repeats` forecasts (after one untimed warm-up if asked)."""
    if warm_up:
        fc.predict_packed(packed, levels=(0.1, 0.5, 0.9), solver=solver)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fc.predict_packed(packed, levels=(0.1, 0.5, 0.9), solver=solver)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, repeats: int, batch_repeats: int, error_series: int) -> dict[str, Any]:
    bundle = ModelBundle.load(name)
    own = bundle.model.cfg.solver
    fc = Forecaster.from_bundle(bundle, num_samples=SAMPLES)
    ref = Forecaster.from_bundle(ModelBundle.load(name), num_samples=SAMPLES, dtype=torch.float64)
    packed, truth = _packed(name)
    n = min(error_series, len(packed))  # the float64 reference is slow: errors on the first n series
    truth, packed_all, packed = truth[: packed.query_offsets[n]], packed, packed.take(0, n)
    exact = ref.predict_packed(
        packed, normalized=True, solver=SolverConfig(rtol=1e-10, atol=1e-12, max_num_steps=10**6)
    )
    target = bundle.normalizer.transform(truth)
    seen = ~np.isnan(target)
    one, many = packed_all.take(0, 1), _tile(packed_all, BATCH)
    settings = [(f"rtol {r:g}", own.at_accuracy(rtol=r, atol=r / 10)) for r in SWEEP]
    settings += [(f"**{lv}**", own.at_accuracy(lv)) for lv in SolverConfig.LEVELS]
    rows = []
    for label, solver in settings:
        out = fc.predict_packed(packed, normalized=True, solver=solver)
        diff = np.abs(out.mean - exact.mean)
        sq = np.where(seen, (out.mean - target) ** 2, np.nan)
        nmse = float(np.nanmean(np.nanmean(sq, axis=0)))  # per channel, then over channels
        rows.append(
            {
                "setting": label,
                "rtol": solver.rtol,
                "atol": solver.atol,
                "max_error": float(diff.max()),
                "rms_error": float(np.sqrt((diff**2).mean())),
                "nmse": nmse,
                "failed": int((out.status != 0).sum()),
                "nfe": float(out.nfe.mean()),
                "ms_one": 1e3 * _seconds(fc, one, solver, repeats, warm_up=True),
                "ms_batch": 1e3 * _seconds(fc, many, solver, batch_repeats, warm_up=False),
            }
        )
        print(name, rows[-1], flush=True)
    groups = {}  # the batcher's price for mixed accuracies: one solve per accuracy in a batch
    for k in (1, 2, 4):
        size = BATCH // k
        parts = [many.take(i * size, (i + 1) * size) for i in range(k)]
        times = []
        for _ in range(batch_repeats):
            t0 = time.perf_counter()
            for part in parts:
                fc.predict_packed(part, levels=(0.1, 0.5, 0.9), solver=own)
            times.append(time.perf_counter() - t0)
        groups[k] = 1e3 * statistics.median(times)
    print(name, "groups", groups, flush=True)
    return {
        "model": name,
        "version": bundle.version,
        "own": {"method": own.method, "rtol": own.rtol, "atol": own.atol},
        "series": len(packed_all),
        "error_series": n,
        "queries": int(packed.query_offsets[-1]),
        "reference_nfe": float(exact.nfe.mean()),
        "rows": rows,
        "groups_ms": groups,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Precision against speed at test time",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}, {torch.get_num_threads()} torch threads. For each embedded",
        f"model, every test series forecast from its context window ({SAMPLES} latent samples, float32, dopri5) at",
        "each tolerance (atol = rtol / 10 in the sweep), against a float64 solve at rtol 1e-10 of the same model",
        "and draws. Solver error in the model's normalised units (per-channel standardisation): how far the",
        "forecast mean is from the exact solve. NMSE: the forecast against the held-out data, which shows",
        "where the tolerance stops mattering. NFE: vector-field evaluations per trajectory (mean over series",
        f"and samples). Latency: median forecast time of one series, and of a batch of {BATCH:,} (three quantiles).",
        "physionet2012's NMSE is dominated by gross entry errors among its held-out values (a temperature of 2.4",
        "lies 42 robust standard deviations out): read it only as unmoved by the tolerance.",
        "",
    ]
    for m in r["models"]:
        own = m["own"]
        lines += [
            f"## {m['model']} (errors over {m['error_series']} of its {m['series']} test series, {m['queries']:,} "
            f"query times; its own setting "
            f"rtol {own['rtol']:g}, atol {own['atol']:g}; the reference took {m['reference_nfe']:.0f} NFE)",
            "",
            "| setting | rtol | atol | max solver error | RMS solver error | NMSE vs data | NFE | 1 series (ms) "
            f"| {BATCH:,} series (ms) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for x in m["rows"]:
            lines.append(
                f"| {x['setting']} | {x['rtol']:g} | {x['atol']:g} | {x['max_error']:.2e} | {x['rms_error']:.2e} "
                f"| {x['nmse']:.4f} | {x['nfe']:.1f} | {x['ms_one']:.1f} | {x['ms_batch']:,.0f} |"
            )
        g = {int(k): v for k, v in m["groups_ms"].items()}  # JSON keys are strings
        lines += [
            "",
            f"Mixed accuracies in one micro-batch are solved as one group per accuracy: {BATCH:,} series as 1 / 2 / 4 "
            f"groups at the model's own setting take {g[1]:,.0f} / {g[2]:,.0f} / {g[4]:,.0f} ms "
            f"(×{g[2] / g[1]:.2f}, ×{g[4] / g[1]:.2f}).",
            "",
        ]
    lines += ["Reproduce: `python -m bench.accuracy_speed`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="spirals,pbcseq,physionet2012")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs of one series per setting")
    ap.add_argument("--batch-repeats", type=int, default=1, help=f"timed runs of {BATCH:,} series per setting")
    ap.add_argument("--error-series", type=int, default=64, help="test series the errors are measured on")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    torch.manual_seed(0)
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "models": [measure(n, args.repeats, args.batch_repeats, args.error_series) for n in args.models.split(",")],
    }
    results.write(args.out, "accuracy_speed", r, markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
