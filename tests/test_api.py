"""The in-process API: the README's snippet as written, then what a user gets off the happy path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import latentcast
from latentcast.models.training.datasets.pbcseq import CHANNELS, read_pbcseq

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet() -> str:
    """The first Python block of README's "In Python" section."""
    section = README.read_text().split("## In Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no Python block under '## In Python'"
    return match.group(1)


def test_the_readme_inputs_snippet_runs_as_written_but_for_its_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "Doses, treatments and other known inputs" block, run from the repository root (its path), with
    two epochs instead of the default recipe's (the one change)."""
    monkeypatch.chdir(README.parent)
    section = README.read_text().split("## Doses, treatments and other known inputs", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no Python block under its inputs section"
    code = match.group(1)
    assert 'time_unit="hour")' in code
    scope: dict[str, object] = {"pd": pd, "latentcast": latentcast}
    exec(
        compile(code.replace('time_unit="hour")', 'time_unit="hour", epochs=2, quiet=True)'), "README.md", "exec"),
        scope,
    )
    fc = scope["fc"]
    assert isinstance(fc, pd.DataFrame) and list(fc["time"]) == [45.0, 60.0] and np.isfinite(fc["point"]).all()
    assert scope["model"].events == ("dose",) and scope["model"].static == ("weight",)  # type: ignore[attr-defined]


def test_the_readme_snippet_runs_as_written(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # it saves runs/mine/model.pt
    scope: dict[str, object] = {}
    exec(compile(readme_snippet(), "README.md", "exec"), scope)
    fc = scope["fc"]
    assert isinstance(fc, pd.DataFrame)
    assert list(fc.columns) == ["id", "time", "channel", "point", "mean", "q0.1", "q0.9"]
    assert len(fc) == 2 * 2 * len(CHANNELS) and set(fc["id"]) == {17, 42}  # ids come back as given
    assert (fc["q0.1"] <= fc["mean"]).all() and (fc["mean"] <= fc["q0.9"]).all() and np.isfinite(fc["mean"]).all()
    mine = latentcast.load(tmp_path / "runs" / "mine" / "model.pt", device="cpu")
    assert mine.channels == ("hr",) and mine.time_unit == "hour"
    hr = scope["hr"]
    assert isinstance(hr, pd.DataFrame)
    out = mine.predict(hr[hr["id"] < 3], query_times=[50.0])
    assert len(out) == 3 and np.isfinite(out["mean"]).all()


@pytest.fixture(scope="module")
def pbcseq() -> latentcast.Model:
    return latentcast.load("pbcseq", device="cpu")


def test_in_process_forecasts_equal_the_servers_path(pbcseq: latentcast.Model) -> None:
    """Date-times and numbers in days give the same forecast; so does a per-series query table."""
    obs = read_pbcseq()[["id", "time", *CHANNELS]]
    obs = obs[obs["id"].isin([1, 2, 3])]
    by_days = pbcseq.predict(obs, query_times={1: [5000.0], 2: [4000.0, 4500.0], 3: [3000.0]})
    base = pd.Timestamp("2000-01-01", tz="UTC")
    dated = obs.assign(time=base + pd.to_timedelta(obs["time"], unit="D"))
    days = pd.to_timedelta([5000, 4000, 4500, 3000], unit="D")
    by_date = pbcseq.predict(dated, query_times=pd.DataFrame({"id": [1, 2, 2, 3], "time": base + days}))
    assert len(by_days) == 4 * len(CHANNELS) and str(by_date["time"].dt.tz) == "UTC"
    np.testing.assert_allclose(by_date["mean"], by_days["mean"], rtol=1e-4)


def test_the_point_forecast_is_the_median_on_logged_channels_and_the_mean_elsewhere(
    pbcseq: latentcast.Model,
) -> None:
    obs = read_pbcseq()[["id", "time", *CHANNELS]]
    obs = obs[obs["id"].isin([1, 2, 3])]
    assert set(pbcseq.log_channels) == {"bili", "chol", "alk.phos", "ast", "protime"}
    fc = pbcseq.predict(obs, query_times=[4000.0, 6000.0], quantiles=[0.1, 0.5, 0.9])
    logged = fc["channel"].isin(pbcseq.log_channels)
    np.testing.assert_allclose(fc.loc[logged, "point"], fc.loc[logged, "q0.5"], rtol=1e-6)
    np.testing.assert_allclose(fc.loc[~logged, "point"], fc.loc[~logged, "mean"], rtol=1e-6)
    assert (fc.loc[logged, "point"] < fc.loc[logged, "mean"]).all()  # the spread pulls a log-normal's mean up
    plain = pbcseq.predict(obs, query_times=[4000.0, 6000.0], quantiles=[0.1, 0.9])  # no median asked
    assert "q0.5" not in plain.columns
    np.testing.assert_allclose(plain["point"], fc["point"], rtol=1e-5)


def test_bad_input_names_the_series_and_what_to_change(pbcseq: latentcast.Model) -> None:
    obs = pd.DataFrame({"id": ["a", "a"], "time": [0.0, 10.0], "bili": [1.0, 2.0]})
    with pytest.raises(latentcast.DataError, match=r"columns \['x'\] are not channels of the model"):
        pbcseq.predict(obs.rename(columns={"bili": "x"}), query_times=[20.0])
    with pytest.raises(latentcast.DataError, match="none of the channels"):
        pbcseq.predict(obs.rename(columns={"bili": "x"}), query_times=[20.0], extra_columns="ignore")
    with pytest.raises(
        latentcast.DataError, match=r"series 'a': query_times\[0\]: .* the limit is .*max_horizon_factor"
    ):
        pbcseq.predict(obs, query_times=[1e7])
    with pytest.raises(latentcast.DataError, match="must be numbers, like the table"):
        pbcseq.predict(obs, query_times=["2026-01-01"])
    with pytest.raises(latentcast.DataError, match=r"query_times: row 0: 'soon' is not an ISO-8601"):
        pbcseq.predict(obs.assign(time=["2026-01-01", "2026-02-01"]), query_times=["soon"])
    with pytest.raises(latentcast.DataError, match="strictly increasing"):
        pbcseq.predict(obs.assign(time=[5.0, 5.0]), query_times=[20.0])
    with pytest.raises(latentcast.DataError, match=r"quantiles: \[1.5\]"):
        pbcseq.predict(obs, query_times=[20.0], quantiles=[0.5, 1.5])
    with pytest.raises(latentcast.DataError, match="series 'b' has no query time"):
        pbcseq.predict(pd.concat([obs, obs.assign(id="b")]), query_times={"a": [20.0]})


def test_a_series_the_solver_cannot_answer_is_named_or_left_nan(tmp_path) -> None:
    from latentcast.models import SolverConfig
    from tests.service.conftest import write_checkpoint

    path = write_checkpoint(
        tmp_path / "stiff.pt",
        "stiff",
        ("x", "y"),
        latentcast.models.TimeSpec("unitless", 1.0),
        method="rk4",
        step_size=0.02,
        max_num_steps=5,
    )
    model = latentcast.load(path, device="cpu", max_horizon_factor=None)
    assert isinstance(model.bundle.config.solver, SolverConfig)
    obs = pd.DataFrame({"id": ["near", "far"], "time": [0.0, 0.0], "x": [1.0, 1.0], "y": [0.5, 0.5]})
    queries = {"near": [0.05], "far": [3.0]}  # 3.0 needs 150 steps of 0.02; the limit is 5
    with pytest.raises(latentcast.SolverFailed, match="series 'far'") as info:
        model.predict(obs, query_times=queries)
    assert info.value.series == ["far"]
    out = model.predict(obs, query_times=queries, on_error="nan")
    assert out[out["id"] == "far"]["mean"].isna().all() and out[out["id"] == "near"]["mean"].notna().all()


def test_the_tolerance_is_a_choice_and_its_cost_is_reported(pbcseq: latentcast.Model) -> None:
    obs = read_pbcseq()[["id", "time", *CHANNELS]]
    obs = obs[obs["id"].isin([1, 2])]
    default = pbcseq.predict(obs, query_times=[4000.0, 6000.0])
    fast = pbcseq.predict(obs, query_times=[4000.0, 6000.0], solver="fast")
    precise = pbcseq.predict(obs, query_times=[4000.0, 6000.0], solver="precise", atol=1e-7)
    assert default.attrs["solver"]["rtol"] == pbcseq.forecaster.solver.rtol
    assert fast.attrs["solver"]["rtol"] == 1e-2 and precise.attrs["solver"]["atol"] == 1e-7
    assert all(fast.attrs["nfe"][k] < default.attrs["nfe"][k] < precise.attrs["nfe"][k] for k in (1, 2))
    # precise is closer to the default than fast is: the default's own error is between them
    gap = [np.abs(x["mean"].to_numpy() - precise["mean"].to_numpy()).max() for x in (fast, default)]
    assert gap[0] > gap[1]
    with pytest.raises(latentcast.DataError, match="rtol"):
        pbcseq.predict(obs, query_times=[4000.0], rtol=2.0)
    with pytest.raises(latentcast.DataError, match="not one of"):
        pbcseq.predict(obs, query_times=[4000.0], solver="exact")  # type: ignore[arg-type]


def test_every_refused_series_is_named_and_skip_answers_the_others(pbcseq: latentcast.Model) -> None:
    obs = pd.DataFrame(
        {
            "id": ["a", "a", "neg", "b", "b", "late"],
            "time": [0.0, 100.0, 0.0, 0.0, 50.0, 0.0],
            "bili": [1.0, 1.2, -1.0, 0.8, 0.9, 1.0],
            "albumin": [3.5, 3.4, 3.5, 3.9, 3.8, 3.6],
        }
    )
    queries = {"a": [200.0], "neg": [200.0], "b": [200.0], "late": [1e7]}
    with pytest.raises(latentcast.Refused, match="2 of 4 series refused") as info:
        pbcseq.predict(obs, query_times=queries)
    assert info.value.series == ["late", "neg"] or info.value.series == ["neg", "late"]
    assert any("max_horizon_factor" in e["msg"] for e in info.value.errors)
    with pytest.warns(latentcast.LatentcastWarning, match="channels not in the table"):
        some = pbcseq.predict(obs, query_times=queries, on_error="skip")
    assert sorted(set(some["id"])) == ["a", "b"]
    assert sorted(e["id"] for e in some.attrs["errors"]) == ["late", "neg"]
    alone = pbcseq.predict(obs[obs["id"] == "b"], query_times=[200.0])
    np.testing.assert_allclose(some[some["id"] == "b"]["mean"], alone["mean"], rtol=1e-5)


def test_unusual_values_are_answered_with_a_warning_in_process(pbcseq: latentcast.Model) -> None:
    obs = pd.DataFrame({"id": ["a", "a"], "time": [0.0, 100.0], "albumin": [3.5, 3.4e6]})
    with pytest.warns(latentcast.LatentcastWarning, match="standard deviations from the training mean"):
        fc = pbcseq.predict(obs, query_times=[200.0])
    kinds = [w["kind"] for w in fc.attrs["warnings"]]
    assert "unusual_value" in kinds and np.isfinite(fc["mean"]).all()
    strict = latentcast.load("pbcseq", device="cpu", warnings_as_errors=True)
    with pytest.raises(latentcast.Refused, match="warnings_as_errors"):
        strict.predict(obs, query_times=[200.0])


def test_tables_are_read_as_written(pbcseq: latentcast.Model, tmp_path: Path) -> None:
    ids = pd.DataFrame({"id": ["1", "1", "01", "01"], "time": [0.0, 90.0, 0.0, 60.0], "bili": [1.0, 1.1, 0.7, 0.8]})
    fc = pbcseq.predict(ids, query_times=[200.0], extra_columns="ignore")
    assert sorted(set(fc["id"])) == ["01", "1"]
    ids.to_csv(tmp_path / "ids.csv", index=False)
    assert sorted(set(latentcast.read_long_table(tmp_path / "ids.csv")["id"])) == ["01", "1"]
    ids.assign(id=[1, 1, 2, 2]).to_parquet(tmp_path / "ids.parquet")
    assert latentcast.read_long_table(tmp_path / "ids.parquet")["id"].tolist() == ["1", "1", "2", "2"]
    with pytest.raises(latentcast.DataError, match="no rows"):
        pbcseq.predict(ids.iloc[:0], query_times=[200.0])
    twice = pd.concat([ids, ids[["bili"]]], axis=1)
    with pytest.raises(latentcast.DataError, match="column 'bili' more than once"):
        pbcseq.predict(twice, query_times=[200.0])
    (tmp_path / "head.csv").write_text("id,time,bili\n")
    with pytest.raises(latentcast.DataError, match="header but no rows"):
        latentcast.read_long_table(tmp_path / "head.csv")


def test_fit_shows_its_epochs_unless_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        [
            {"id": f"s{i}", "time": float(t), "hr": 70 + 5 * np.sin(t / 9 + i)}
            for i in range(30)
            for t in range(0, 48, 6)
        ]
    ).assign(hr=lambda d: d["hr"] + rng.normal(0, 1, len(d)))
    small = {"model": {"latent_dim": 3, "encoder_hidden": 8, "dynamics_hidden": 8}}
    latentcast.fit(frame, channels=["hr"], time_unit="hour", epochs=2, config=small, device="cpu")
    assert "epoch 2" in capsys.readouterr().err
    latentcast.fit(frame, channels=["hr"], time_unit="hour", epochs=2, config=small, device="cpu", quiet=True)
    assert "epoch" not in capsys.readouterr().err
