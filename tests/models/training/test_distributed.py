"""Multi-process training: `torchrun --nproc_per_node=2 latentcast train` on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from latentcast.models.checkpoint import load_checkpoint, read_payload
from latentcast.models.training import distributed
from latentcast.models.training.train import BEST, LAST, METRICS, RANKS
from tests.conftest import make_series

ROOT = Path(__file__).resolve().parents[3]

TINY = """
[model]
kind = "latent_ode"
latent_dim = 4
encoder = "gru"
encoder_hidden = 8
dynamics_hidden = 16
decoder_hidden = 8

[model.solver]
rtol = 1e-4
atol = 1e-5

[train]
epochs = 2
batch_size = 6
lr = 1e-2
val_samples = 4
plot_series = 1
"""


def _long_table(path: Path) -> None:
    rows = [
        {"id": s.id, "time": t, **{c: v for c, v in zip("abc", vals, strict=True) if not np.isnan(v)}}
        for s in make_series(40, seed=3, missing=0.2)
        for t, vals in zip(s.times, s.values, strict=True)
    ]
    pd.DataFrame(rows, columns=["id", "time", "a", "b", "c"]).to_csv(path, index=False)


def test_two_cpu_processes_end_with_identical_weights_and_a_loadable_checkpoint(tmp_path: Path) -> None:
    data, cfg, out = tmp_path / "obs.csv", tmp_path / "tiny.toml", tmp_path / "run"
    _long_table(data)
    cfg.write_text(TINY)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "latentcast", "train", "--data", str(data), "--channels", "a,b,c", "--time-unit", "day",
        "--config", str(cfg),
        "--out", str(out), "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((out / RANKS).read_text())
    assert ranks["world_size"] == 2
    assert len(set(ranks["weights_digest"])) == 1  # both ranks hold the same weights
    bundle = load_checkpoint(out / LAST)  # written by rank 0 only, and it loads
    assert distributed.weights_digest(bundle.model) == ranks["weights_digest"][0]
    assert (out / BEST).exists() and len(json.loads((out / METRICS).read_text())["history"]) == 2
    assert read_payload(out / LAST)["train_state"]["epoch"] == 2
    assert sum(line.startswith("best epoch") for line in proc.stdout.splitlines()) == 1  # one report, from rank 0


def test_shards_are_disjoint_and_equal_in_size() -> None:
    perm = np.random.default_rng(0).permutation(23)
    parts = [list(distributed.shard(perm, distributed.World(r, 3))) for r in range(3)]
    assert [len(p) for p in parts] == [7, 7, 7]
    assert len(set().union(*parts)) == 21 and set().union(*parts) <= set(perm.tolist())
    assert list(distributed.shard(perm, distributed.World())) == perm.tolist()


def test_a_world_of_one_needs_no_process_group() -> None:
    world = distributed.from_env() if "WORLD_SIZE" not in os.environ else distributed.World()
    assert not world.active and world.main
    assert distributed.start(world, torch.device("cpu")) == torch.device("cpu")
    assert distributed.all_ok(world, False, torch.device("cpu")) is False
