"""Where a PhysioNet 2012 training step's time goes, and what batching by length saves.

For the recipe (models/training/configs/physionet2012.toml) on this machine: the first --steps steps of an epoch,
timed by phase (collate, forward = encoder + solve + decoder + likelihood, backward + optimizer step),
with and without length pools (train.length_pool), and the padding each leaves in the encoder's and
the targets' arrays.

    python -m bench.profile_train [--steps 40] [--pools 0,16]   # bench/results/physionet2012_profile.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import results
from latentcast.models.training import (
    Normalizer,
    batch_indices,
    build_experiment,
    build_model,
    channel_weights,
    collate,
    load_dataset,
)

ROOT = Path(__file__).resolve().parents[1]


def profile(data: str, pool: int, steps: int) -> dict[str, Any]:
    exp = build_experiment("physionet2012", data={"name": data})
    tc = exp.train
    split = load_dataset(exp.data)
    norm = Normalizer.fit(split.train, split.channels, split.log_channels, exp.data.normalize)
    torch.manual_seed(0)
    model = build_model(exp.model, len(split.channels))
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    w = channel_weights(split.train, tc.channel_balance)
    cw = None if w is None else torch.tensor(w, dtype=torch.float32)
    lengths = np.array([len(s) for s in split.train])
    rng = np.random.default_rng(0)
    batches = batch_indices(rng.permutation(len(split.train)), lengths, tc.batch_size, pool, rng)
    phase = {"collate": 0.0, "forward": 0.0, "backward": 0.0}
    cells = real = ctx_cells = ctx_real = nfe = 0
    for idx in batches[:steps]:
        part = [split.train[i] for i in idx]
        t0 = time.perf_counter()
        batch = collate(part, norm, None, exp.model.anchor)
        t1 = time.perf_counter()
        loss, stats = model.loss(batch, 1.0, tc.iwae_samples, tc.likelihood == "forecast", tc.max_target_times, cw)
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        phase["collate"] += t1 - t0
        phase["forward"] += t2 - t1
        phase["backward"] += t3 - t2
        cells += batch.tgt_t.numel()
        real += int(sum(len(s) for s in part))
        ctx_cells += batch.ctx_t.numel()
        ctx_real += int(batch.ctx_len.sum())
        nfe += stats.nfe
    n = min(steps, len(batches))
    total = sum(phase.values())
    return {
        "pool": pool,
        "steps": n,
        "ms_per_step": 1e3 * total / n,
        "phase_ms": {k: 1e3 * v / n for k, v in phase.items()},
        "epoch_seconds": total / n * len(batches),
        "steps_per_epoch": len(batches),
        "target_padding": 1 - real / cells,
        "context_padding": 1 - ctx_real / ctx_cells,
        "nfe_per_step": nfe / n,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# PhysioNet 2012: a training step, profiled",
        "",
        f"{r['device']}, {torch.get_num_threads()} torch thread(s), commit {r['commit']}, {r['date']}.",
        f"The recipe's first {r['rows'][0]['steps']} steps (batch {r['batch_size']}), timed by phase; padding = the",
        "share of padded cells in the encoder's (context) and the targets' arrays. The epoch estimate is the mean",
        "step × steps per epoch (validation not included).",
        "",
        "| length pool | ms / step | collate | forward | backward + step | NFE / step | context padding | target "
        "padding | epoch (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        p = x["phase_ms"]
        lines.append(
            f"| {x['pool'] or 'off'} | {x['ms_per_step']:.0f} | {p['collate']:.0f} | {p['forward']:.0f} | "
            f"{p['backward']:.0f} | {x['nfe_per_step']:.0f} | {100 * x['context_padding']:.0f}% | "
            f"{100 * x['target_padding']:.0f}% | {x['epoch_seconds']:.0f} |"
        )
    lines += ["", "Reproduce: `python -m bench.profile_train`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="physionet2012")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--pools", default="0,16")
    args = ap.parse_args()
    rows = [profile(args.data, int(p), args.steps) for p in args.pools.split(",")]
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "batch_size": build_experiment("physionet2012").train.batch_size,
        "rows": rows,
    }
    results.write(ROOT / "bench" / "results", "physionet2012_profile", r, markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
