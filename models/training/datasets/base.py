"""What every data set loader returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from latentcast.models.data import Series, TimeSpec
from latentcast.models.inputs import InputSpec


@dataclasses.dataclass(frozen=True)
class DatasetSplit:
    """train/val/test series plus what a model needs to know about them (stored in checkpoints);
    `inputs`: the events and static covariates the series carry (none by default)."""

    train: list[Series]
    val: list[Series]
    test: list[Series]
    channels: tuple[str, ...]
    log_channels: tuple[str, ...]
    time: TimeSpec
    description: dict[str, Any]
    inputs: InputSpec = dataclasses.field(default_factory=InputSpec)


def split_series(
    series: Sequence[Series],
    ids: tuple[Sequence[str], Sequence[str], Sequence[str]],
    channels: Sequence[str],
    log_channels: Sequence[str],
    time: TimeSpec,
    description: dict[str, Any],
    inputs: InputSpec | None = None,
) -> DatasetSplit:
    by_id = {s.id: s for s in series}
    parts = [[by_id[i] for i in sorted(part)] for part in ids]
    desc = dict(description, split={"train": len(parts[0]), "val": len(parts[1]), "test": len(parts[2])})
    return DatasetSplit(
        parts[0], parts[1], parts[2], tuple(channels), tuple(log_channels), time, desc, inputs or InputSpec()
    )
