"""PhysioNet/Computing in Cardiology Challenge 2012: 12,000 ICU stays, 41 channels, the t-PatchGNN
forecasting protocol (Zhang et al., ICML 2024).

Reads the three official archives (`set-a.tar.gz`, `set-b.tar.gz`, `set-c.tar.gz`) or their extracted
`set-X/` directories from a path; each record `RecordID.txt` has rows `Time,Parameter,Value` with
`Time` as hh:mm since ICU admission. The protocol:
- records ordered by RecordID; split by `numpy.random.RandomState(42).permutation(12000)`:
  test = perm[:2400], train = perm[2400:9600], val = perm[9600:];
- times in hours at minute resolution (no quantisation); several values of one variable at the same
  minute are averaged; the descriptors (Age, Gender, Height, ICUType, Weight at 00:00) are channels,
  their -1 ("unknown") kept as a value; with `data.static` naming some of Age, Gender, Height and
  ICUType, those are static covariates instead (`models.inputs`), each read from 00:00, a missing-value
  marker or a value outside `data.bounds` read as unknown;
- observe every record for t < 24 h, forecast every observation at t ≥ 24 h (`Series.n_context`).
Parsed records are cached (`LATENTCAST_CACHE`, default ~/.cache/latentcast) by the archives' sizes and
modification times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from latentcast.models.config import DataConfig
from latentcast.models.data import DataError, Series, TimeSpec
from latentcast.models.inputs import InputSpec
from latentcast.models.training.datasets.base import DatasetSplit, split_series

CHANNELS = (
    "Age", "Gender", "Height", "ICUType", "Weight", "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN",
    "Cholesterol", "Creatinine", "DiasABP", "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "Mg",
    "MAP", "MechVent", "Na", "NIDiasABP", "NIMAP", "NISysABP", "PaCO2", "PaO2", "pH", "Platelets", "RespRate",
    "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC",
)  # fmt: skip
DESCRIPTORS = ("Age", "Gender", "Height", "ICUType")  # observed at 00:00 only: never forecast targets
SETS = ("set-a", "set-b", "set-c")
HISTORY_HOURS = 24.0
TIME = TimeSpec(unit="hour", scale=1 / 12)  # a 48-hour stay spans 4 model time units
DEFAULT_PATH = Path("../shared/data/physionet2012")
_INDEX = {c: i for i, c in enumerate(CHANNELS)}


def parse_record(text: str) -> tuple[np.ndarray, np.ndarray]:
    """One record file → times (T,) in hours, strictly increasing, and values (T, 41), NaN = not
    observed; values of one variable at the same minute averaged."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for line in text.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) != 3 or parts[1] not in _INDEX:
            continue  # RecordID and blank lines
        hh, mm = parts[0].split(":")
        minute = int(hh) * 60 + int(mm)
        j = _INDEX[parts[1]]
        if minute not in sums:
            sums[minute] = np.zeros(len(CHANNELS))
            counts[minute] = np.zeros(len(CHANNELS))
        sums[minute][j] += float(parts[2])
        counts[minute][j] += 1
    minutes = sorted(sums)
    s = np.stack([sums[m] for m in minutes]) if minutes else np.zeros((0, len(CHANNELS)))
    n = np.stack([counts[m] for m in minutes]) if minutes else np.zeros((0, len(CHANNELS)))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(n > 0, s / n, np.nan)
    return np.asarray(minutes, dtype=np.float64) / 60.0, values.astype(np.float32)


def _files(root: Path) -> Iterator[tuple[str, str]]:
    """(record id, text) of every record, from archives or extracted directories under `root`."""
    for name in SETS:
        folder, archive = root / name, root / f"{name}.tar.gz"
        if folder.is_dir():
            for f in folder.glob("*.txt"):
                yield f.stem, f.read_text()
        elif archive.is_file():
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".txt"):
                        fh = tar.extractfile(member)
                        if fh is not None:
                            yield Path(member.name).stem, io.TextIOWrapper(fh).read()
        else:
            raise DataError(f"{root}: no {name}.tar.gz or {name}/ (PhysioNet 2012 challenge data, version 1.0.0)")


def _cache_file(root: Path) -> Path:
    key = hashlib.sha256()
    for name in SETS:
        for p in (root / f"{name}.tar.gz", root / name):
            if p.exists():
                st = p.stat()
                key.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    base = Path(os.environ.get("LATENTCAST_CACHE", Path.home() / ".cache" / "latentcast"))
    return base / f"physionet2012-{key.hexdigest()[:16]}.npz"


def read_records(root: str | Path = DEFAULT_PATH) -> list[Series]:
    """Every record as a `Series` (id = RecordID, times in hours), ordered by RecordID; n_context = the
    points before 24 h."""
    root = Path(root)
    cache = _cache_file(root)
    if cache.is_file():
        z = np.load(cache)
        ids, times, values, offs = z["ids"], z["times"], z["values"], z["offsets"]
    else:
        parsed = sorted(((int(rid), *parse_record(text)) for rid, text in _files(root)), key=lambda r: r[0])
        ids = np.array([r[0] for r in parsed], dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum([len(r[1]) for r in parsed])])
        times = np.concatenate([r[1] for r in parsed])
        values = np.concatenate([r[2] for r in parsed])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, ids=ids, times=times, values=values, offsets=offs)
        tmp.replace(cache)
    out = []
    for k, rid in enumerate(ids.tolist()):
        t, v = times[offs[k] : offs[k + 1]], values[offs[k] : offs[k + 1]]
        keep = ~np.isnan(v).all(axis=1)
        t, v = t[keep], v[keep]
        if len(t):
            out.append(Series(str(rid), t * TIME.scale, v, n_context=max(1, int((t < HISTORY_HOURS).sum()))))
    return out


def protocol_split(series: list[Series]) -> tuple[list[str], list[str], list[str]]:
    """The benchmark's split by position in RecordID order (train, val, test ids)."""
    if len(series) != 12000:
        raise DataError(f"PhysioNet 2012 has 12,000 records; found {len(series)}")
    perm = np.random.RandomState(42).permutation(12000)
    ids = [s.id for s in series]
    pick = lambda idx: [ids[i] for i in idx]  # noqa: E731
    return pick(perm[2400:9600]), pick(perm[9600:]), pick(perm[:2400])


def with_static(series: list[Series], cfg: DataConfig) -> tuple[list[Series], tuple[str, ...]]:
    """The descriptors named in `cfg.static` moved from the channels to each series' static covariates
    (their value at 00:00; a marker of `cfg.missing_values` or a value outside `cfg.bounds`: unknown),
    the rows left empty dropped; and the channels that remain."""
    unknown = sorted(set(cfg.static) - set(DESCRIPTORS))
    if unknown or cfg.events or cfg.levels:
        raise DataError(f"physionet2012: static covariates are among {list(DESCRIPTORS)} (no events); got {unknown}")
    idx = [_INDEX[c] for c in cfg.static]
    keep = [i for i in range(len(CHANNELS)) if i not in idx]
    spec = InputSpec(static=tuple(cfg.static))
    out = []
    for s in series:
        first = s.values[0, idx].astype(np.float64) if s.times[0] == 0 else np.full(len(idx), np.nan)
        for j, name in enumerate(cfg.static):
            lo, hi = cfg.bounds.get(name, cfg.bounds.get("*", (-np.inf, np.inf)))
            marks = cfg.missing_values.get(name, cfg.missing_values.get("*", ()))
            if first[j] in marks or not lo <= first[j] <= hi:
                first[j] = np.nan
        values = s.values[:, keep]
        rows = ~np.isnan(values).all(axis=1)
        if not rows.any():
            continue
        times = s.times[rows]
        n_context = max(1, int((times < HISTORY_HOURS * TIME.scale).sum()))
        inputs = spec.held(np.zeros(0), np.zeros((0, 0)), first)
        out.append(dataclasses.replace(s, times=times, values=values[rows], n_context=n_context, inputs=inputs))
    return out, tuple(CHANNELS[i] for i in keep)


def load_physionet2012(cfg: DataConfig) -> DatasetSplit:
    """`cfg.name` = "physionet2012" (the default path) or "physionet2012:PATH"."""
    _, _, path = cfg.name.partition(":")
    series = read_records(path or DEFAULT_PATH)
    ids = protocol_split(series)
    channels: tuple[str, ...] = CHANNELS
    inputs = None
    if cfg.static:
        series, channels = with_static(series, cfg)
        train = set(ids[0])
        inputs = InputSpec.fit([s for s in series if s.id in train], (), cfg.static)
        present = {s.id for s in series}
        ids = tuple([i for i in part if i in present] for part in ids)  # type: ignore[assignment]
    return split_series(
        series,
        ids,
        channels,
        () if cfg.log_channels is None else cfg.log_channels,
        TIME,
        {
            "name": "physionet2012",
            "source": "PhysioNet/CinC Challenge 2012 v1.0.0, sets a-c (t-PatchGNN protocol)",
            "series": len(series),
            "time": "hours since ICU admission (model time: 12 h = 1)",
            "history_hours": HISTORY_HOURS,
        },
        inputs,
    )
