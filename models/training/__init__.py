"""latentcast.models.training: building and fitting latent ODEs, beside the inference core.

The public surface (the CLI, `latentcast.fit` and the benchmarks use only this and `datasets`):
- the loop: `train_model` (a run directory with `BEST`, the last checkpoint and `METRICS`), `TrainResult`
- configuration: `ExperimentConfig` (`ModelConfig`, `TrainConfig`, `DataConfig`), `build_experiment` (a
  shipped recipe, a user file, then overrides), `recipe` (a shipped recipe as dicts), `data_config` (what
  a checkpoint was trained on)
- data: `load_dataset` (a built-in data set or a table's seeded split), `dataset_from_frame`,
  `DatasetSplit`, `Normalizer`; `Batch` and `collate` (padded training batches)
- the module: `LatentODE`, `build_model` (a config → an untrained model)
- batching: `batch_indices` (length-pooled batches), `channel_weights` (rare channels' loss weights)
- evaluation: `forecast_contexts`, `holdout_metrics`, `baseline_nmse`

Inside: `train` (the loop), `crossval` (small tables), `calibrate` (the pull toward the last value and
the spread, fitted after training), `report`, `metrics`, `preprocess` (time scale, log channels,
outliers), `datasets`, `recipes` and `configs` (the shipped TOML recipes), `distributed`, `plot`.
The service imports none of it.
"""

from latentcast.models.checkpoint import build_model
from latentcast.models.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from latentcast.models.data import Batch, Normalizer, collate
from latentcast.models.latent_ode import LatentODE
from latentcast.models.training.artifacts import BEST, METRICS
from latentcast.models.training.datasets import DatasetSplit, dataset_from_frame, load_dataset
from latentcast.models.training.metrics import baseline_nmse, forecast_contexts, holdout_metrics
from latentcast.models.training.recipes import build_experiment, data_config, recipe
from latentcast.models.training.schedule import batch_indices, channel_weights
from latentcast.models.training.train import TrainResult
from latentcast.models.training.train import train as train_model

__all__ = [
    "BEST",
    "METRICS",
    "Batch",
    "DataConfig",
    "DatasetSplit",
    "ExperimentConfig",
    "LatentODE",
    "ModelConfig",
    "Normalizer",
    "TrainConfig",
    "TrainResult",
    "baseline_nmse",
    "batch_indices",
    "build_experiment",
    "build_model",
    "channel_weights",
    "collate",
    "data_config",
    "dataset_from_frame",
    "forecast_contexts",
    "holdout_metrics",
    "load_dataset",
    "recipe",
    "train_model",
]
