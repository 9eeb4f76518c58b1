"""Shipped recipes (models/training/configs/NAME.toml) and how a run's configuration is assembled from them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.config import DataConfig, ExperimentConfig, from_dict, load_config_file, merge


def recipe(name: str) -> dict[str, Any]:
    """A shipped config (models/training/configs/NAME.toml) as plain dicts."""
    ref = resources.files("latentcast.models.training.configs").joinpath(f"{name}.toml")
    if not ref.is_file():
        raise FileNotFoundError(f"no shipped config {name!r}")
    with resources.as_file(ref) as path:
        return load_config_file(path)


def build_experiment(base: str, config_file: str | Path | None = None, **overrides: Any) -> ExperimentConfig:
    """Recipe `base`, then a user config file, then explicit overrides ({"train": {"seed": 3}}, …)."""
    values = recipe(base)
    if config_file is not None:
        values = merge(values, load_config_file(config_file))
    values = merge(values, {k: v for k, v in overrides.items() if v})
    return from_dict(ExperimentConfig, values)


def data_config(bundle: ModelBundle) -> DataConfig:
    """The data configuration a checkpoint was trained with (its table, channels, split and units)."""
    return from_dict(DataConfig, bundle.data["config"])
