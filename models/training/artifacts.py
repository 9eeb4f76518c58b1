"""What a run writes beside its checkpoints: metrics.json and the PNG of validation forecasts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.config import ExperimentConfig, to_dict
from latentcast.models.training.datasets import DatasetSplit

log = logging.getLogger("latentcast.train")

BEST, LAST, METRICS, PLOT, RANKS = "best.pt", "last.pt", "metrics.json", "validation.png", "ranks.json"
FOLDS = "folds"  # cross-validation's runs, one directory per fold


def write_metrics(
    out: Path,
    exp: ExperimentConfig,
    history: list[dict[str, Any]],
    best: float,
    seconds: float,
    report: dict[str, Any] | None = None,
    stopped: str | None = None,
    chosen: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json; `chosen` (cross-validation's choice) stands for the best validation row."""
    best_row = min(history, key=lambda r: r.get("val_nmse", r["val_loss"])) if history else {}
    best_row = chosen or best_row
    metrics = {
        "experiment": to_dict(exp),
        "best": best_row,
        "best_score": best,
        "history": history,
        "wall_seconds_this_run": seconds,
        "stopped_early": stopped,
        "report": report,
    }
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics


def plot_best(out: Path, best: ModelBundle, split: DatasetSplit, exp: ExperimentConfig, device: torch.device) -> None:
    """validation.png, when matplotlib is installed (the [plot] extra)."""
    try:
        from latentcast.models.training.plot import plot_validation
    except ImportError:
        log.info("no %s: install latentcast[plot] for it", PLOT)
        return
    plot_validation(out / PLOT, best, split.val[: exp.train.plot_series], device)
