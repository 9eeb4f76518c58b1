"""latentcast.models.training: fitting a latent ODE to a long table, beside the inference core.

- `train_model` (the loop, `train.train`), `TrainResult`; `build_experiment` (a shipped recipe, a user
  file, then overrides); `load_dataset` (a built-in data set or a table's seeded split) and
  `dataset_from_frame` (a long DataFrame's split).
- Inside: `train` (the loop), `crossval` (small tables), `calibrate` (the pull toward the last value and
  the spread, fitted after training), `report`, `metrics`, `preprocess` (time scale, log channels,
  outliers), `datasets`, `recipes` and `configs` (the shipped TOML recipes), `distributed`, `plot`.

The service imports none of it; `latentcast.fit`, the CLI and the benchmarks do.
"""

from latentcast.models.training.datasets import dataset_from_frame, load_dataset
from latentcast.models.training.recipes import build_experiment
from latentcast.models.training.train import TrainResult
from latentcast.models.training.train import train as train_model

__all__ = ["TrainResult", "build_experiment", "dataset_from_frame", "load_dataset", "train_model"]
