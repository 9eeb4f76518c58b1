"""latentcast.models: latent ODEs for irregularly sampled, partly missing time series.

The public surface (everything else is internal; `latentcast.service` imports only this):
- configuration: `ModelConfig`, `SolverConfig`, `TrainConfig`, `DataConfig`, `ExperimentConfig`
- data: `Series`, `TimeSpec`, `Normalizer`, `series_from_frame`, `read_long_table`
- packed batches: `PackedSeries`, `PackedForecast`
- input checks: `pack` (a request's arrays → accepted series, refusals and warnings: `Checked`, `Issue`),
  `Limits` (what a model takes), `Validity` (a model's physical bounds and missing-value markers)
- model and inference: `LatentODE`, `Forecaster`, `SeriesForecast`, `SolverError`, `Status`;
  `interruptible` / `Interrupted` (stop a forecast part-way once nobody waits for it)
- continuous depth: `ODEBlock` (a residual block whose depth is an ODE solve)
- checkpoints: `ModelBundle`, `load_checkpoint`, `save_checkpoint`, `find_checkpoint`, `embedded_models`
- devices: `resolve_device`, `threads_for`

This is the inference core: nothing here imports the trainer. Training (the loop, cross-validation,
calibration, reports, recipes, data sets) is `latentcast.models.training`, which the service never
imports (an import contract in pyproject.toml).
"""

from latentcast.frames import read_long_table
from latentcast.models.checkpoint import (
    EMBEDDED_DIR,
    CheckpointError,
    ModelBundle,
    embedded_models,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from latentcast.models.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, SolverConfig, TrainConfig
from latentcast.models.data import DataError, Normalizer, Series, TimeSpec, series_from_frame
from latentcast.models.device import resolve_device, threads_for
from latentcast.models.forecast import Forecaster, SeriesForecast
from latentcast.models.guard import Checked, Issue, Limits, pack
from latentcast.models.interrupt import Interrupted, interruptible
from latentcast.models.latent_ode import LatentODE
from latentcast.models.odeblock import ODEBlock
from latentcast.models.packed import PackedForecast, PackedSeries
from latentcast.models.solve import SolverError, Status
from latentcast.models.validity import Validity

__all__ = [
    "EMBEDDED_DIR",
    "Checked",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "ExperimentConfig",
    "Forecaster",
    "Interrupted",
    "Issue",
    "LatentODE",
    "Limits",
    "ModelBundle",
    "ModelConfig",
    "Normalizer",
    "ODEBlock",
    "PackedForecast",
    "PackedSeries",
    "Series",
    "SeriesForecast",
    "SolverConfig",
    "SolverError",
    "Status",
    "TimeSpec",
    "TrainConfig",
    "Validity",
    "embedded_models",
    "find_checkpoint",
    "interruptible",
    "load_checkpoint",
    "pack",
    "read_long_table",
    "resolve_device",
    "save_checkpoint",
    "series_from_frame",
    "threads_for",
]
