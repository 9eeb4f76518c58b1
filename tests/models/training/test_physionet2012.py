"""The PhysioNet 2012 loader on small records written here in the challenge's own layout."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from latentcast.models.data import DataError
from latentcast.models.training.datasets.physionet2012 import CHANNELS, TIME, parse_record, protocol_split, read_records


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTCAST_CACHE", str(tmp_path / "cache"))


RECORD = """Time,Parameter,Value
00:00,RecordID,{rid}
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,4
00:00,Weight,-1
00:07,HR,73
00:07,HR,77
00:07,Temp,35.1
23:59,HR,80
24:00,HR,90
47:30,Glucose,120
"""


def test_a_record_is_parsed_at_minute_resolution_with_duplicates_averaged() -> None:
    times, values = parse_record(RECORD.format(rid=1))
    np.testing.assert_allclose(times, [0.0, 7 / 60, 23 + 59 / 60, 24.0, 47.5])
    hr, age, height = CHANNELS.index("HR"), CHANNELS.index("Age"), CHANNELS.index("Height")
    assert values[1, hr] == 75.0  # 73 and 77 at 00:07
    assert values[0, age] == 54.0 and values[0, height] == -1.0  # "unknown" kept as a value
    assert np.isnan(values[0, hr]) and values.shape == (5, len(CHANNELS))


@pytest.mark.parametrize("layout", ["archives", "directories"])
def test_records_from_archives_or_directories_ordered_by_record_id(tmp_path, layout: str) -> None:
    ids = {"set-a": [30, 10], "set-b": [20], "set-c": [5]}
    for name, rids in ids.items():
        if layout == "directories":
            (tmp_path / name).mkdir()
            for rid in rids:
                (tmp_path / name / f"{rid}.txt").write_text(RECORD.format(rid=rid))
        else:
            with tarfile.open(tmp_path / f"{name}.tar.gz", "w:gz") as tar:
                for rid in rids:
                    data = RECORD.format(rid=rid).encode()
                    info = tarfile.TarInfo(f"{name}/{rid}.txt")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    series = read_records(tmp_path)
    assert [s.id for s in series] == ["5", "10", "20", "30"]
    s = series[0]
    assert s.n_context == 3  # 00:00, 00:07, 23:59 are before 24 h
    np.testing.assert_allclose(s.times, np.array([0.0, 7 / 60, 23 + 59 / 60, 24.0, 47.5]) * TIME.scale)
    with pytest.raises(DataError, match="12,000 records"):
        protocol_split(series)


def test_missing_archives_say_what_is_expected(tmp_path) -> None:
    with pytest.raises(DataError, match=r"no set-a.tar.gz or set-a/"):
        read_records(tmp_path)


def test_the_protocol_split_is_the_benchmarks() -> None:
    from latentcast.models.data import Series

    series = [Series(str(i), np.zeros(1), np.zeros((1, len(CHANNELS)), np.float32)) for i in range(12000)]
    train, val, test = protocol_split(series)
    perm = np.random.RandomState(42).permutation(12000)
    assert test[:3] == [str(i) for i in perm[:3]] and len(test) == 2400
    assert len(train) == 7200 and len(val) == 2400 and train[0] == str(perm[2400]) and val[0] == str(perm[9600])


def test_descriptors_named_static_leave_the_channels_for_the_series_statics(tmp_path) -> None:
    from latentcast.models.config import DataConfig
    from latentcast.models.training.datasets.physionet2012 import with_static

    (tmp_path / "set-a").mkdir()
    (tmp_path / "set-a" / "1.txt").write_text(RECORD.format(rid=1))
    (tmp_path / "set-a" / "2.txt").write_text(RECORD.format(rid=2).replace("00:00,Age,54", "00:00,Age,140"))
    (tmp_path / "set-a" / "3.txt").write_text("Time,Parameter,Value\n00:00,RecordID,3\n00:00,Age,70\n")
    for name in ("set-b", "set-c"):
        (tmp_path / name).mkdir()
    series = read_records(tmp_path)
    cfg = DataConfig(
        name="physionet2012", static=("Age", "Height", "ICUType"), missing_values={"*": (-1.0,)},
        bounds={"Age": (0.0, 125.0)},
    )  # fmt: skip
    out, channels = with_static(series, cfg)
    assert len(channels) == len(CHANNELS) - 3 and "Age" not in channels and channels[:2] == ("Gender", "Weight")
    assert [s.id for s in out] == ["1", "2"]  # record 3 had only descriptors: nothing left to model
    one, two = out
    assert one.inputs is not None and two.inputs is not None
    np.testing.assert_array_equal(one.inputs.static, [54.0, np.nan, 4.0])  # Height -1: unknown
    assert np.isnan(two.inputs.static[0])  # Age 140 is outside its bounds: unknown
    assert one.values.shape == (5, len(channels)) and one.n_context == 3
    with pytest.raises(DataError, match="static covariates are among"):
        with_static(series, DataConfig(name="physionet2012", static=("HR",)))
