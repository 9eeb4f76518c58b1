"""Built-in data sets and user files, all returned as a seeded train/val/test `DatasetSplit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from latentcast.frames import parse_times, read_long_table
from latentcast.models.config import DataConfig
from latentcast.models.data import DataError, TimeSpec, series_from_frame, split_ids
from latentcast.models.inputs import InputSpec
from latentcast.models.training.datasets.base import DatasetSplit, split_series
from latentcast.models.training.datasets.pbcseq import load_pbcseq
from latentcast.models.training.datasets.physionet2012 import load_physionet2012
from latentcast.models.training.datasets.spirals import load_spirals
from latentcast.models.training.preprocess import TARGET_SPAN, apply_validity, auto_log_channels, auto_time_scale
from latentcast.models.validity import Validity
from latentcast.times import TIME_UNITS

__all__ = ["DatasetSplit", "dataset_from_frame", "load_dataset", "load_pbcseq", "load_spirals", "table_name"]


def load_dataset(cfg: DataConfig) -> DatasetSplit:
    """`cfg.name`: "spirals", "pbcseq", "physionet2012[:PATH]", or a path to a long table (then
    `cfg.channels` is required)."""
    if cfg.name == "spirals":
        return load_spirals(cfg)
    if cfg.name == "pbcseq":
        return load_pbcseq(cfg)
    if cfg.name == "physionet2012" or cfg.name.startswith("physionet2012:"):
        return load_physionet2012(cfg)
    path = Path(cfg.name)
    if not path.exists():
        raise DataError(f"data {cfg.name!r}: not a built-in data set (spirals, pbcseq, physionet2012) and no such file")
    return dataset_from_frame(read_long_table(path), cfg, {"name": table_name(path), "source": str(path)})


def table_name(path: Path) -> str:
    """A model's default name from its training file: the name without its extensions (obs.csv.gz → obs)."""
    name = path.name
    for ext in (".gz", ".csv", ".parquet", ".pq"):
        name = name.removesuffix(ext)
    return name or path.name


def dataset_from_frame(
    frame: pd.DataFrame,
    cfg: DataConfig,
    description: dict[str, Any] | None = None,
    id_col: str = "id",
    time_col: str = "time",
) -> DatasetSplit:
    """A long table → a seeded train/val/test split of its series by id (`cfg.channels` required). An
    unset time scale or set of log channels is chosen from the training split (models.preprocess), its
    missing-value markers and values outside the physical bounds set aside (`data.missing_values`,
    `data.bounds`)."""
    if not cfg.channels:
        raise DataError(f"data {cfg.name!r}: name the channels to model (--channels a,b,c)")
    unit, unit_rule = time_unit_of(frame, cfg, id_col, time_col)
    events = (*cfg.events, *cfg.levels)  # a level is an event column whose value holds until the next
    series = series_from_frame(
        frame, cfg.channels, TimeSpec(unit, cfg.time_scale or 1.0), id_col, time_col, events, cfg.static
    )
    parts = split_ids([s.id for s in series], cfg.split, cfg.split_seed)
    train_ids = set(parts[0])
    # chosen without markers and impossible values (training sets those aside itself, and counts them)
    validity = Validity.from_config(cfg.bounds, cfg.missing_values, cfg.channels)
    train = apply_validity([s for s in series if s.id in train_ids], validity).series
    scale = cfg.time_scale
    if scale is None:
        scale = auto_time_scale(train)
        series = [s.scaled(scale) for s in series]
    logs = cfg.log_channels if cfg.log_channels is not None else auto_log_channels(train, cfg.channels)
    choices = {
        "time_unit": unit,
        "time_unit_rule": unit_rule,
        "time_scale": scale,
        "time_scale_rule": "given" if cfg.time_scale is not None else f"auto: median training span = {TARGET_SPAN:g}",
        "log_channels": list(logs),
        "log_channels_rule": "given" if cfg.log_channels is not None else "auto: > 0 and right-skewed",
    }
    return split_series(
        series,
        parts,
        cfg.channels,
        logs,
        TimeSpec(unit, scale),
        {
            "name": cfg.name,
            **(description or {}),
            "series": len(series),
            "preprocessing": choices,
            "ignored_columns": [
                str(c) for c in frame.columns if c not in {id_col, time_col, *cfg.channels, *events, *cfg.static}
            ],
        },
        InputSpec.fit([s for s in series if s.id in train_ids], events, cfg.static, cfg.levels),
    )


_INFERRED_UNITS = ("second", "minute", "hour", "day")


def time_unit_of(frame: pd.DataFrame, cfg: DataConfig, id_col: str = "id", time_col: str = "time") -> tuple[str, str]:
    """The unit of a table's times, and how it was chosen: as given; for date-times, the largest of second,
    minute, hour, day in which the median series spans at least 2; numeric times without one: a DataError
    asking for it (a number of days and a number of years look alike)."""
    if cfg.time_unit is not None:
        return cfg.time_unit, "given"
    if time_col not in frame.columns or id_col not in frame.columns:
        return "day", "default"  # series_from_frame names the missing column
    times = parse_times(frame[time_col], f"column {time_col!r}")
    if not times.is_datetime:
        raise DataError(
            f"data {cfg.name!r}: the times are numbers; name their unit with --time-unit "
            f"({', '.join(u for u in TIME_UNITS if u != 'unitless')}, or unitless for numbers with no calendar meaning)"
        )
    seconds = pd.Series(times.values).groupby(frame[id_col].to_numpy()).agg(lambda t: t.max() - t.min())
    span = float(seconds.median()) if len(seconds) else 0.0
    unit = next((u for u in reversed(_INFERRED_UNITS) if span >= 2 * TIME_UNITS[u]), "second")
    return unit, f"auto: median series span {span / TIME_UNITS[unit]:.3g} {unit}s"
