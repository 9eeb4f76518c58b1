from __future__ import annotations

import numpy as np

from bench.physionet import validation_as_test
from latentcast.models.data import Series, TimeSpec
from latentcast.models.training.datasets.base import DatasetSplit


def _series(name: str) -> list[Series]:
    return [Series(name, np.arange(3.0), np.ones((3, 2), dtype=np.float32))]


def test_validation_takes_the_test_slot_and_nothing_else_moves() -> None:
    split = DatasetSplit(_series("tr"), _series("va"), _series("te"), ("a", "b"), (), TimeSpec("hour"), {"n": 1})
    v = validation_as_test(split)
    assert v.test is split.val and v.val is split.val and v.train is split.train
    assert (v.channels, v.log_channels, v.time, v.description) == (
        split.channels,
        split.log_channels,
        split.time,
        split.description,
    )
    assert split.test[0].id == "te"  # the original split is untouched
