"""Mayo Clinic PBC sequential lab data (R `survival::pbcseq`), vendored in data/pbcseq.csv.gz."""

from __future__ import annotations

from importlib import resources

import pandas as pd

from latentcast.models.config import DataConfig
from latentcast.models.data import TimeSpec, series_from_frame, split_ids
from latentcast.models.training.datasets.base import DatasetSplit, split_series

CHANNELS = ("bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime")
# Right-skewed labs (sample skewness 2.8–6.2 raw; ≤ 1 after a log, protime 2.8) are modelled on a log scale.
LOG_CHANNELS = ("bili", "chol", "alk.phos", "ast", "protime")
TIME = TimeSpec(unit="day", scale=1 / 365.25)  # model time in years since the patient's first visit


def read_pbcseq() -> pd.DataFrame:
    """The vendored table: 1,945 visits of 312 patients, all 19 columns, `day` renamed to `time`."""
    with resources.files("latentcast.models.training.datasets").joinpath("data/pbcseq.csv.gz").open("rb") as fh:
        frame = pd.read_csv(fh, compression="gzip")
    return frame.rename(columns={"day": "time"})


def load_pbcseq(cfg: DataConfig) -> DatasetSplit:
    frame = read_pbcseq()
    series = series_from_frame(frame, CHANNELS, TIME)
    ids = split_ids([s.id for s in series], cfg.split, cfg.split_seed)
    log = LOG_CHANNELS if cfg.log_channels is None else cfg.log_channels
    return split_series(
        series,
        ids,
        CHANNELS,
        log,
        TIME,
        {
            "name": "pbcseq",
            "source": "R survival::pbcseq (survival 3.5.3), vendored",
            "series": len(series),
            "visits": len(frame),
            "time": "days since first visit (model time: years)",
        },
    )
