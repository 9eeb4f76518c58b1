"""A checkpoint with the anchor benchmark's shapes (bench/anchors.py), for serving in bench/http.py so
HTTP throughput compares with the raw solver figures of bench/solver.py.

Run: python -m bench.anchor_model runs/bench/anchor.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.anchors import CHANNELS
from bench.solver import build
from latentcast.models import ModelBundle, TimeSpec
from latentcast.models.training import Normalizer


def save(path: str | Path) -> Path:
    import torch

    ours, _ = build(torch.device("cpu"))
    norm = Normalizer(("a", "b", "c")[:CHANNELS], (False,) * CHANNELS, (0.0,) * CHANNELS, (1.0,) * CHANNELS)
    bundle = ModelBundle(
        "anchor", ours, norm, TimeSpec("unitless", 1.0), {"name": "anchor-shaped, random weights", "max_span": 3.0}
    )
    return bundle.save(path)


if __name__ == "__main__":
    print(save(sys.argv[1] if len(sys.argv) > 1 else "runs/bench/anchor.pt"))
