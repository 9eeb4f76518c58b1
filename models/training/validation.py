"""Validation after every epoch: the loss on the validation series and their held-out forecasts."""

from __future__ import annotations

import torch

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.config import ExperimentConfig
from latentcast.models.data import collate
from latentcast.models.forecast import Forecaster
from latentcast.models.solve import SolverError
from latentcast.models.training.datasets import DatasetSplit
from latentcast.models.training.metrics import forecast_contexts, holdout_metrics


def validate(bundle: ModelBundle, split: DatasetSplit, exp: ExperimentConfig, device: torch.device) -> dict[str, float]:
    """Validation loss (negative ELBO per observed value, fixed noise) and held-out forecast metrics. A batch
    whose solve fails (dynamics blown up mid-training) makes the loss NaN and is counted, not raised: the
    epoch is then never the best by loss, and training goes on."""
    model = bundle.model
    model.eval()
    series = split.val
    contexts = forecast_contexts(series, exp.train.val_task)
    total, count, failed = 0.0, 0.0, 0
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(exp.train.seed + 10_000)
        for start in range(0, len(series), exp.train.batch_size):
            part = series[start : start + exp.train.batch_size]
            batch = collate(
                part, bundle.normalizer, contexts[start : start + len(part)], model.cfg.anchor, bundle.inputs
            )
            batch = batch.to(device)
            try:
                loss, _ = model.loss(batch, forecast_only=exp.train.likelihood == "forecast")
            except SolverError:
                failed += 1
                continue
            n = float(batch.tgt_m.sum())
            total += float(loss) * n
            count += n
    forecaster = Forecaster(model, bundle.normalizer, device, num_samples=exp.train.val_samples)
    out = {"val_loss": total / max(count, 1.0)}
    if failed:
        out.update(val_loss=float("nan"), val_failed_batches=float(failed))
    out.update({f"val_{k}": v for k, v in holdout_metrics(forecaster, series, contexts).items()})
    return out
