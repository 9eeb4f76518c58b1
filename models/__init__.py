"""latentcast.models: the inference core of latent ODEs for irregularly sampled, partly missing series.

The public surface (everything else is internal; `latentcast.service` imports only this):
- checkpoints: `ModelBundle` (`ModelBundle.load(path or embedded name)`, `.save(path)`, `.embedded()`)
- forecasting: `Forecaster` (batches series through a model; its CPU threads fixed when it is built),
  `Interrupted` (raised when its caller stops wanting a forecast part-way), `Status`
- data: `Series`, `TimeSpec`, `PackedSeries`, `PackedForecast`, `SolverConfig`, `InputSpec` (the events and
  static covariates a model takes: `.split` a table's rows, `.held`/`.none` one series' inputs)
- input checks: `Limits` (what a model takes; `Limits.pack`: a request's arrays → accepted series,
  refusals and warnings as `Issue`s); `ConfigError`, `DataError`
- devices: `resolve_device`

Building and fitting models (configs, the `LatentODE` module, batches, the loop, cross-validation,
calibration, data sets) is `latentcast.models.training`, which the service never imports (an import
contract in pyproject.toml); continuous-depth layers are `latentcast.layers`.
"""

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.config import ConfigError, SolverConfig
from latentcast.models.data import DataError, Series, TimeSpec
from latentcast.models.device import resolve_device
from latentcast.models.forecast import Forecaster
from latentcast.models.guard import Issue, Limits
from latentcast.models.inputs import InputSpec
from latentcast.models.interrupt import Interrupted
from latentcast.models.packed import PackedForecast, PackedSeries
from latentcast.models.solve import Status

__all__ = [
    "ConfigError",
    "DataError",
    "Forecaster",
    "InputSpec",
    "Interrupted",
    "Issue",
    "Limits",
    "ModelBundle",
    "PackedForecast",
    "PackedSeries",
    "Series",
    "SolverConfig",
    "Status",
    "TimeSpec",
    "resolve_device",
]
