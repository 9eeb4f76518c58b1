"""Forecasting a whole table on Ray Data (`latentcast.batch`): a local Ray started by the test (2 CPUs,
nothing beyond 127.0.0.1), the real pbcseq table written as parquet files that split every patient's
visits between them, uneven series lengths, refused series beside answered ones; every output row
compared with `Model.predict` on the whole table."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import latentcast
from latentcast.models.training.datasets.pbcseq import CHANNELS, read_pbcseq

ray = pytest.importorskip("ray", reason="the [ray] extra")
from latentcast.batch import forecast_table  # noqa: E402

KEYS = ["id", "time", "channel"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """60 patients (1–16 visits each), one with no value at all (refused), one with an albumin of 200
    (answered, with a warning)."""
    frame = read_pbcseq()[["id", "time", *CHANNELS]]
    ids = frame["id"].unique()[:60]
    frame = frame[frame["id"].isin(ids)].copy()
    frame.loc[frame["id"] == ids[3], list(CHANNELS)] = np.nan
    frame.loc[frame.index[frame["id"] == ids[5]][0], "albumin"] = 200.0  # 406 training scales out
    return frame.reset_index(drop=True)


def _write_split(frame: pd.DataFrame, folder: Path, parts: int = 3) -> Path:
    """Rows shuffled, then cut into `parts` files: each patient's visits end up in several files."""
    folder.mkdir()
    rows = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    for k, chunk in enumerate(np.array_split(np.arange(len(rows)), parts)):
        rows.iloc[chunk].to_parquet(folder / f"part-{k}.parquet", index=False)
    return folder


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(id=frame["id"].astype(str)).sort_values(KEYS).reset_index(drop=True)


def test_a_split_table_is_forecast_as_model_predict_does_row_by_row(local_ray, table, tmp_path: Path) -> None:
    ids = table["id"].unique()
    assert len(set(pd.read_parquet(_write_split(table, tmp_path / "obs"), columns=["id"])["id"])) == 60
    per_file = [set(pd.read_parquet(p)["id"]) for p in sorted((tmp_path / "obs").glob("*.parquet"))]
    assert len(per_file[0] & per_file[1] & per_file[2]) > 10  # patients split across the files
    last = table.groupby("id")["time"].max()
    queries = pd.DataFrame(
        {"id": np.repeat(last.index, 2), "time": np.ravel([[t + 180.0, t + 365.0] for t in last.to_numpy()])}
    )
    queries.to_parquet(tmp_path / "queries.parquet", index=False)

    summary, parts = forecast_table(
        tmp_path / "obs",
        tmp_path / "out",
        "pbcseq",
        tmp_path / "queries.parquet",
        series_per_batch=16,
        concurrency=2,  # 0.25 CPU each on this 2-CPU Ray
        num_samples=0,  # the posterior mean
        progress=False,
    )
    model = latentcast.load("pbcseq", device="cpu", num_samples=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentcast.LatentcastWarning)  # compared through attrs
        expected = model.predict(table, queries, on_error="skip")
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out" / "forecasts").glob("*.parquet"))])

    assert summary.series == 60 and summary.refused == 1 and summary.answered == 59
    assert summary.rows == len(expected) == len(got) == 59 * 2 * len(CHANNELS)
    a, b = _sorted(got), _sorted(expected)
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    for col in ("point", "mean", "q0.1", "q0.5", "q0.9"):  # float32 kernels round by batch size: ~10 ulps
        np.testing.assert_allclose(a[col], b[col], rtol=2e-6, atol=1e-9, err_msg=col)
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert errors["id"].tolist() == [ids[3]] and expected.attrs["errors"][0]["msg"] == errors["msg"][0]
    warned = pd.read_parquet(tmp_path / "out" / "warnings")
    assert ids[5] in set(warned["id"]) and set(warned["id"]) == {w["id"] for w in expected.attrs["warnings"]}
    assert parts["forecasts"].count() == summary.rows


def test_one_list_for_every_series_with_samples_and_series_without_queries(local_ray, table, tmp_path) -> None:
    """One list of query times; 32 latent samples (the same draws as in process); a refused series and
    a mapping that leaves a series out are listed, never a failed job."""
    obs = _write_split(table, tmp_path / "obs", parts=2)
    when = [4000.0, 4400.0]
    summary, parts = forecast_table(obs, None, "pbcseq", when, series_per_batch=7, progress=False)
    model = latentcast.load("pbcseq", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", latentcast.LatentcastWarning)
        expected = model.predict(table, when, on_error="skip")
    got = pa.concat_tables(ray.get(parts["forecasts"].to_arrow_refs())).to_pandas()
    a, b = _sorted(got), _sorted(expected)
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a["q0.9"], b["q0.9"], rtol=1e-5, atol=1e-7)
    assert summary.refused == 1 and summary.output is None

    ids = table["id"].unique()
    mapping = dict.fromkeys(ids[1:], when)  # the first patient has no query time
    summary, parts = forecast_table(obs, None, "pbcseq", mapping, progress=False)
    errors = pa.concat_tables(ray.get(parts["errors"].to_arrow_refs())).to_pandas()
    assert sorted(errors["id"].tolist()) == sorted([ids[0], ids[3]])
    assert "no query time" in errors.loc[errors["id"] == ids[0], "msg"].item()
    assert summary.answered == 58


def test_what_cannot_be_read_says_what_to_change(local_ray, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        forecast_table(tmp_path / "nothing", None, "pbcseq", [1.0])
    pd.DataFrame({"patient": ["a"], "time": [0.0], "bili": [1.0]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="no column 'id'"):
        forecast_table(tmp_path / "t.parquet", None, "pbcseq", [1.0])
    with pytest.raises(FileNotFoundError, match=r"query_times: 1\.0,2\.0 does not exist"):
        forecast_table(tmp_path / "t.parquet", None, "pbcseq", "1.0,2.0", id_col="patient")
    with pytest.raises(ValueError, match="lower concurrency or num_cpus"):
        forecast_table(tmp_path / "t.parquet", None, "pbcseq", [1.0], id_col="patient", num_cpus=1.0)


def test_the_cli_forecasts_a_table_on_ray_with_its_progress_bars_on_a_terminal(table, tmp_path) -> None:
    """`latentcast forecast --engine ray` as typed: a local Ray of its own, Ray Data's progress bars
    drawn on the terminal, three parquet directories and a one-line summary."""
    from tests.test_cli import _run_on_a_terminal

    _write_split(table, tmp_path / "obs", parts=2)
    args = ["forecast", "--engine", "ray", "--input", "obs", "--output", "out", "--model", "pbcseq"]
    code, out = _run_on_a_terminal([*args, "--query-times", "4000,4400"], tmp_path)
    assert code == 0, out[-3000:]
    assert "\x1b[" in out and "MapBatches(Scorer)" in out and "rows/s" in out  # Ray Data's bars
    assert "60 series (59 answered, 1 refused), 826 forecast rows, 1 warnings" in out
    got = pd.read_parquet(tmp_path / "out" / "forecasts")
    assert len(got) == 826 and set(got.columns) >= {"id", "time", "channel", "point", "mean", "q0.1", "q0.9"}
    assert len(pd.read_parquet(tmp_path / "out" / "errors")) == 1
    code, out = _run_on_a_terminal([*args, "--query-times", "4000,4400"], tmp_path)  # the same again
    assert code == 0 and len(pd.read_parquet(tmp_path / "out" / "forecasts")) == 826  # replaced, not appended

    code, out = _run_on_a_terminal(["forecast", "--engine", "ray", "--input", "obs", "--query-times", "1"], tmp_path)
    assert code != 0 and "--engine ray needs --output DIR and --model" in out
