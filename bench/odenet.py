"""ODE-Net against ResNets on the 8×8 digits (Chen et al. 2018, Table 1 and Fig. 3c–d), on this CPU.

Data: scikit-learn's bundled `load_digits` (1,797 images, 8×8, 10 classes; offline), a fixed stratified
split: 1,347 to train, 450 to test. Every network: a 3×3 conv stem to C channels, then its feature
block(s), then norm → ReLU → average pool → linear. Feature blocks:
- ODE-Net: one `latentcast.layers.ODEBlock` (the paper's conv field f(t, h), t ∈ [0, 1], dopri5), trained with
  the adjoint, and again with backpropagation through the solver's operations;
- ResNet-1: one residual block h + f(h) with the same layers (a similar parameter budget);
- ResNet-6: six such blocks (the paper's ResNet);
- ResNet-N: as many blocks as the ODE-Net's forward evaluations of f in its last epoch (equal depth).

Reported: test error after the last epoch (no selection on the test set), parameters, peak training
memory (measured in a fresh process: growth of peak RSS over one forward + backward + step at batch
256), and per epoch the forward and backward NFE per iteration. A second table shows memory against
solver steps (tolerance) with and without the adjoint.

    python -m bench.odenet [--epochs 30] [--seeds 3]      # bench/results/odenet.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench import results
from latentcast.layers import ConvField, ODEBlock, SolverConfig

ROOT = Path(__file__).resolve().parents[1]
MEMORY_BATCH = 256


class ResBlock(nn.Module):
    """h + f(h), f the ODE-Net's field at t = 0 (the same layers and parameters, less the t channel's)."""

    def __init__(self, channels: int):
        super().__init__()
        self.f = ConvField(channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.f(torch.zeros((), dtype=h.dtype), h)


class Net(nn.Module):
    """stem → feature → head. x: (B, 1, 8, 8) → logits (B, 10)."""

    def __init__(self, feature: nn.Module, channels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.ReLU())
        self.feature = feature
        self.head = nn.Sequential(  # 2×2 pooling keeps where on the 8×8 a stroke is
            nn.GroupNorm(8, channels), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature(self.stem(x)))


def build(kind: str, channels: int, blocks: int = 1, tol: float = 1e-3) -> Net:
    if kind.startswith("odenet"):
        solver = SolverConfig(rtol=tol, atol=tol, adjoint=kind == "odenet_adjoint", max_num_steps=10_000)
        return Net(ODEBlock(ConvField(channels), solver), channels)
    return Net(nn.Sequential(*[ResBlock(channels) for _ in range(blocks)]), channels)


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=450, stratify=d.target, random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def _block(net: Net) -> ODEBlock | None:
    return net.feature if isinstance(net.feature, ODEBlock) else None


def train(net: Net, data: tuple[torch.Tensor, ...], epochs: int, batch: int, seed: int) -> dict[str, Any]:
    x_tr, y_tr, x_te, y_te = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x_tr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    block = _block(net)
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(x_tr), generator=gen)
        fwd, bwd, losses = [], [], []
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if block is not None:
                fwd.append(block.nfe_forward)
                bwd.append(block.count_backward())
        err = test_error(net, x_te, y_te)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "test_error": err,
                "nfe_forward": float(np.mean(fwd)) if fwd else None,
                "nfe_backward": float(np.mean(bwd)) if bwd else None,
            }
        )
        print(json.dumps(history[-1]), flush=True)
    return {"history": history, "test_error": history[-1]["test_error"], "seconds": time.perf_counter() - t0}


@torch.no_grad()
def test_error(net: Net, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float((net(x).argmax(1) != y).float().mean())


class RssPeak:
    """The highest resident set size seen, sampled every 0.2 ms by a thread, in bytes."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.0002)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def memory_worker(kind: str, channels: int, blocks: int, tol: float) -> dict[str, Any]:
    """One training iteration at batch MEMORY_BATCH in this (fresh) process: how far the resident set
    rises above where it stood before (sampled; large buffers are mmapped, so frees show), and NFE."""
    torch.manual_seed(0)
    net = build(kind, channels, blocks, tol)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(MEMORY_BATCH, 1, 8, 8)
    y = torch.randint(0, 10, (MEMORY_BATCH,))
    with RssPeak() as rss:
        base = rss.now()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    peak = (rss.peak - base) / 2**20
    block = _block(net)
    return {
        "peak_mib": peak,
        "nfe_forward": block.nfe_forward if block else None,
        "nfe_backward": block.count_backward() if block else None,
    }


def peak_memory(kind: str, channels: int, blocks: int = 1, tol: float = 1e-3) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.odenet", "--memory-worker", kind, "--channels", str(channels)]
    cmd += ["--blocks", str(blocks), "--tol", str(tol)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}  # frees return to the OS
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed: {out.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# ODE-Net against ResNets on the 8×8 digits (Chen et al. 2018, Table 1)",
        "",
        f"{r['device']}, commit {r['commit']}, {r['date']}. scikit-learn's `load_digits` (offline), a fixed",
        f"stratified split of {r['train']:,} training and {r['test']} test images; {r['channels']} channels,",
        f"{r['epochs']} epochs of AdamW (one-cycle, peak lr 3e-3), batch {r['batch']}, seeds 0–{r['seeds'] - 1}; the",
        "test error after the last epoch (nothing is selected on the test set). ODE-Nets: one `ODEBlock`, dopri5,",
        f"rtol = atol = {r['tol']:g}, t ∈ [0, 1]. Peak memory: one training iteration at batch {MEMORY_BATCH} in a",
        "fresh process (growth of peak RSS). NFE: evaluations of f per iteration in the last epoch.",
        "",
        "| network | test error (mean ± std) | parameters | peak training memory (MiB) | NFE forward | NFE backward "
        f"| training time (s, {r['threads']} thread(s)) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in r["models"].items():
        last = x["history"][-1]
        nf = f"{last['nfe_forward']:.1f}" if last["nfe_forward"] is not None else "–"
        nb = f"{last['nfe_backward']:.1f}" if last["nfe_backward"] is not None else "–"
        lines.append(
            f"| {name} | {100 * x['test_error']:.2f} ± {100 * x['test_error_std']:.2f}% | {x['params']:,} "
            f"| {x['memory']['peak_mib']:.1f} | {nf} | {nb} "
            f"| {x['seconds']:.0f} |"
        )
    ode = r["models"]["ODE-Net (adjoint)"]["history"]
    lines += [
        "",
        "## NFE as training proceeds (the paper's Fig. 3c–d), ODE-Net with the adjoint, seed 0",
        "",
        "| epoch | NFE forward | NFE backward | backward / forward | train loss | test error |",
        "|---|---|---|---|---|---|",
    ]
    for h in ode:
        lines.append(
            f"| {h['epoch']} | {h['nfe_forward']:.1f} | {h['nfe_backward']:.1f} "
            f"| {h['nfe_backward'] / h['nfe_forward']:.2f} | {h['loss']:.4f} | {100 * h['test_error']:.2f}% |"
        )
    lines += [
        "",
        f"## Memory against solver steps (one iteration, batch {MEMORY_BATCH}, untrained ODE-Net)",
        "",
        "| tolerance | NFE forward | backprop through the solver: peak MiB | adjoint: peak MiB "
        "| adjoint NFE backward |",
        "|---|---|---|---|---|",
    ]
    for m in r["memory_sweep"]:
        lines.append(
            f"| {m['tol']:g} | {m['direct']['nfe_forward']} | {m['direct']['peak_mib']:.1f} "
            f"| {m['adjoint']['peak_mib']:.1f} | {m['adjoint']['nfe_backward']} |"
        )
    lines += ["", f"Reproduce: `{r['command']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--memory-worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--blocks", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.channels, args.blocks, args.tol)))
        return
    data = digits()
    c = args.channels
    plan: list[tuple[str, str, int]] = [
        ("ODE-Net (adjoint)", "odenet_adjoint", 1),
        ("ODE-Net (backprop through the solver)", "odenet_direct", 1),
        ("ResNet-1 (similar parameters)", "resnet", 1),
        ("ResNet-6 (the paper's)", "resnet", 6),
    ]
    models: dict[str, Any] = {}
    for name, kind, blocks in [*plan, ("", "", 0)]:
        if not name:  # equal depth: as many blocks as the ODE-Net's forward NFE in its last epoch
            blocks = round(models["ODE-Net (adjoint)"]["history"][-1]["nfe_forward"])
            name, kind = f"ResNet-{blocks} (the ODE-Net's depth in evaluations)", "resnet"
        runs = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = build(kind, c, blocks, args.tol)
            print(f"== {name}, seed {seed}: {n_params(net):,} parameters", flush=True)
            runs.append(train(net, data, args.epochs, args.batch, seed))
        errors = [x["test_error"] for x in runs]
        models[name] = {
            "history": runs[0]["history"],
            "test_errors": errors,
            "test_error": float(np.mean(errors)),
            "test_error_std": float(np.std(errors)),
            "seconds": float(np.mean([x["seconds"] for x in runs])),
            "params": n_params(net),
            "memory": peak_memory(kind, c, blocks, args.tol),
        }
    sweep = []
    for tol in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        sweep.append(
            {
                "tol": tol,
                "direct": peak_memory("odenet_direct", c, 1, tol),
                "adjoint": peak_memory("odenet_adjoint", c, 1, tol),
            }
        )
        print(json.dumps(sweep[-1]), flush=True)
    r = {
        "device": results.machine("cpu"),
        "commit": results.commit(),
        "date": time.strftime("%Y-%m-%d"),
        "train": len(data[0]),
        "test": len(data[2]),
        "channels": c,
        "epochs": args.epochs,
        "batch": args.batch,
        "seeds": args.seeds,
        "tol": args.tol,
        "threads": torch.get_num_threads(),
        "models": models,
        "memory_sweep": sweep,
        "command": " ".join(["python -m bench.odenet", *sys.argv[1:]]),
    }
    results.write(args.out, "odenet", r, markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
