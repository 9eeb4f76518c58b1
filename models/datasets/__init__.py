"""Built-in data sets and user files, all returned as a seeded train/val/test `DatasetSplit`."""

from __future__ import annotations

from pathlib import Path

from models.config import DataConfig
from models.data import DataError, TimeSpec, read_long_table, series_from_frame, split_ids
from models.datasets.base import DatasetSplit, split_series
from models.datasets.pbcseq import load_pbcseq
from models.datasets.spirals import load_spirals

__all__ = ["DatasetSplit", "load_dataset", "load_pbcseq", "load_spirals"]


def load_dataset(cfg: DataConfig) -> DatasetSplit:
    """`cfg.name`: "spirals", "pbcseq", or a path to a long table (then `cfg.channels` is required)."""
    if cfg.name == "spirals":
        return load_spirals(cfg)
    if cfg.name == "pbcseq":
        return load_pbcseq(cfg)
    path = Path(cfg.name)
    if not path.exists():
        raise DataError(f"data {cfg.name!r}: not a built-in data set (spirals, pbcseq) and no such file")
    if not cfg.channels:
        raise DataError(f"data {cfg.name!r}: name the channels to model (--channels a,b,c)")
    spec = TimeSpec(cfg.time_unit, cfg.time_scale)
    series = series_from_frame(read_long_table(path), cfg.channels, spec)
    train, val, test = split_ids([s.id for s in series], cfg.split, cfg.split_seed)
    return split_series(
        series,
        (train, val, test),
        cfg.channels,
        cfg.log_channels,
        spec,
        {"name": path.name, "source": str(path), "series": len(series)},
    )
