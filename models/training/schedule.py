"""What changes over a training run: the learning rate (warm-up, then a cosine), the KL weight (an
anneal), the batches (shuffled, optionally pooled by length) and the channels' likelihood weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from latentcast.models.config import ExperimentConfig
from latentcast.models.data import Series


def channel_weights(series: Sequence[Series], balance: float) -> np.ndarray | None:
    """Per-channel likelihood weights ∝ count^-balance, scaled so the mean weight per observed value is 1
    (the loss keeps its scale); channels never observed weigh 0. None when balance is 0."""
    if balance == 0:
        return None
    counts = np.zeros(series[0].values.shape[1])
    for s in series:
        counts += np.isfinite(s.values).sum(axis=0)
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -balance, 0.0)
    return w * counts.sum() / max(float((w * counts).sum()), 1e-12)


def batch_indices(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, pool: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`order` cut into batches of `batch_size`. With pool > 0, each run of pool × batch_size indices is
    first sorted by `lengths` and the batches are then shuffled: as many batches, less padding."""
    if pool <= 0:
        return [order[a : a + batch_size] for a in range(0, len(order), batch_size)]
    out = []
    for a in range(0, len(order), pool * batch_size):
        run = order[a : a + pool * batch_size]
        run = run[np.argsort(lengths[run], kind="stable")]
        out += [run[b : b + batch_size] for b in range(0, len(run), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def lr_at(exp: ExperimentConfig, epoch: int) -> float:
    """Linear warm-up over warmup_epochs, then a cosine from lr to lr_min over the remaining epochs."""
    tc = exp.train
    if epoch < tc.warmup_epochs:
        return tc.lr * (epoch + 1) / (tc.warmup_epochs + 1)
    done = (epoch - tc.warmup_epochs) / max(1, tc.epochs - tc.warmup_epochs)
    return tc.lr_min + 0.5 * (tc.lr - tc.lr_min) * (1 + math.cos(math.pi * done))


def kl_weight(exp: ExperimentConfig, progress: float) -> float:
    n = exp.train.kl_anneal_epochs
    return 1.0 if n == 0 else min(1.0, progress / n)
