"""latentcast.models: latent ODEs for irregularly sampled, partly missing time series.

Public surface (everything else is internal):
- configuration: `ModelConfig`, `SolverConfig`, `TrainConfig`, `DataConfig`, `ExperimentConfig`
- data: `Series`, `TimeSpec`, `Normalizer`, `series_from_frame`, `read_long_table`, `load_dataset`
- model and inference: `LatentODE`, `Forecaster`, `SeriesForecast`, `SolverError`
- checkpoints: `ModelBundle`, `load_checkpoint`, `save_checkpoint`
"""

from models.checkpoint import CheckpointError, ModelBundle, load_checkpoint, save_checkpoint
from models.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, SolverConfig, TrainConfig
from models.data import DataError, Normalizer, Series, TimeSpec, read_long_table, series_from_frame
from models.datasets import load_dataset
from models.forecast import Forecaster, SeriesForecast
from models.latent_ode import LatentODE
from models.solve import SolverError, Status

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "ExperimentConfig",
    "Forecaster",
    "LatentODE",
    "ModelBundle",
    "ModelConfig",
    "Normalizer",
    "Series",
    "SeriesForecast",
    "SolverConfig",
    "SolverError",
    "Status",
    "TimeSpec",
    "TrainConfig",
    "load_checkpoint",
    "load_dataset",
    "read_long_table",
    "save_checkpoint",
    "series_from_frame",
]
