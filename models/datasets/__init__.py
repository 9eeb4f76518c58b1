"""Built-in data sets and user files, all returned as a seeded train/val/test `DatasetSplit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from latentcast.frames import read_long_table
from latentcast.models.config import DataConfig
from latentcast.models.data import DataError, TimeSpec, series_from_frame, split_ids
from latentcast.models.datasets.base import DatasetSplit, split_series
from latentcast.models.datasets.pbcseq import load_pbcseq
from latentcast.models.datasets.spirals import load_spirals

__all__ = ["DatasetSplit", "dataset_from_frame", "load_dataset", "load_pbcseq", "load_spirals"]


def load_dataset(cfg: DataConfig) -> DatasetSplit:
    """`cfg.name`: "spirals", "pbcseq", or a path to a long table (then `cfg.channels` is required)."""
    if cfg.name == "spirals":
        return load_spirals(cfg)
    if cfg.name == "pbcseq":
        return load_pbcseq(cfg)
    path = Path(cfg.name)
    if not path.exists():
        raise DataError(f"data {cfg.name!r}: not a built-in data set (spirals, pbcseq) and no such file")
    return dataset_from_frame(read_long_table(path), cfg, {"name": path.name, "source": str(path)})


def dataset_from_frame(
    frame: pd.DataFrame,
    cfg: DataConfig,
    description: dict[str, Any] | None = None,
    id_col: str = "id",
    time_col: str = "time",
) -> DatasetSplit:
    """A long table → a seeded train/val/test split of its series by id (`cfg.channels` required)."""
    if not cfg.channels:
        raise DataError(f"data {cfg.name!r}: name the channels to model (--channels a,b,c)")
    spec = TimeSpec(cfg.time_unit, cfg.time_scale)
    series = series_from_frame(frame, cfg.channels, spec, id_col, time_col)
    train, val, test = split_ids([s.id for s in series], cfg.split, cfg.split_seed)
    return split_series(
        series,
        (train, val, test),
        cfg.channels,
        cfg.log_channels,
        spec,
        {"name": cfg.name, **(description or {}), "series": len(series)},
    )
