"""Backtests on a user's table: the split, the scores beside the baselines, the CLI as typed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import latentcast
from latentcast.backtest import INTERVALS, split_series
from latentcast.models import TimeSpec
from tests.service.conftest import write_checkpoint
from tests.test_cli import _run_on_a_terminal


def _table(n: int = 30, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = np.sort(rng.uniform(0, 2.5, 5))
        rows += [
            {"id": f"s{i}", "time": float(tt), "x": float(np.sin(tt + i)), "y": float(0.5 * tt + i % 3)} for tt in t
        ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    path = write_checkpoint(tmp_path_factory.mktemp("bt") / "toy.pt", "toy", ("x", "y"), TimeSpec("unitless", 1.0))
    return path


def test_the_last_point_or_the_second_half_is_held_out() -> None:
    frame = pd.DataFrame({"id": ["a"] * 5 + ["b"] + ["c"] * 2, "time": [4, 1, 3, 0, 2, 0, 1, 0], "v": range(8)})
    ctx, held = split_series(frame, "last")
    assert list(held["time"]) == [4, 1] and set(held["id"]) == {"a", "c"} and len(ctx) == 6  # b: one row, kept
    ctx, held = split_series(frame, "half")
    assert list(held[held["id"] == "a"]["time"]) == [3, 4] and len(ctx) + len(held) == len(frame)


def test_the_scores_put_the_model_beside_the_baselines_on_the_same_points(toy) -> None:
    frame = _table()
    result = latentcast.load(toy, device="cpu").backtest(frame, task="half")
    s = result.scores.set_index(["method", "channel"])
    assert set(s.index.get_level_values("method")) == {"latent_ode", "locf", "linear_trend"}
    held_out = len(split_series(frame, "half")[1])  # 2 of each series' 5 points
    assert s.loc[("latent_ode", "x"), "points"] == s.loc[("locf", "x"), "points"] == held_out == 60
    # LOCF scored by hand: the last context value of each series against every held-out one
    fc = result.forecasts[result.forecasts["channel"] == "x"]
    ctx, held = split_series(frame, "half")
    last = ctx.groupby("id")["x"].last()
    manual = np.mean((held["x"].to_numpy() - last[held["id"]].to_numpy()) ** 2) / np.var(held["x"].to_numpy())
    assert s.loc[("locf", "x"), "nmse"] == pytest.approx(manual)
    assert np.allclose(fc["locf"].to_numpy(), last[fc["id"]].to_numpy())
    for c in INTERVALS:
        assert 0.0 <= s.loc[("latent_ode", "x"), f"coverage{int(100 * c)}"] <= 1.0
    assert s.loc[("locf", "x"), "crps"] == pytest.approx(s.loc[("locf", "x"), "mae"])  # a point forecast
    assert s.loc[("latent_ode", "all"), "points"] == len(result.forecasts)
    assert "backtest (half points of 30 series held out" in result.summary()


def test_the_cli_backtests_as_typed_with_its_progress(toy, tmp_path) -> None:
    _table().to_csv(tmp_path / "obs.csv", index=False)
    code, out = _run_on_a_terminal(["backtest", "--data", "obs.csv", "--model", str(toy), "--device", "cpu"], tmp_path)
    assert code == 0, out[-2000:]
    assert "forecasting held-out points" in out and "━" in out  # rich drew its bar on the terminal
    assert "latent_ode" in out and "linear_trend" in out and ("beats both" in out or "instead" in out)
    for name in ("scores.csv", "forecasts.csv", "backtest.png"):
        assert (tmp_path / "runs" / "backtest_toy" / name).stat().st_size > 0
    code, out = _run_on_a_terminal(
        ["backtest", "--data", "obs.csv", "--model", str(toy), "--out", "q", "--quiet", "--device", "cpu"], tmp_path
    )
    assert code == 0 and "━" not in out and (tmp_path / "q" / "scores.csv").exists()
    # --unseen, as typed: a model fitted on ten of the thirty series scores the other twenty
    from latentcast.models.checkpoint import load_checkpoint, save_checkpoint

    bundle = load_checkpoint(toy)
    bundle.data["fitted_ids"] = sorted(set(_table()["id"]))[:10]
    save_checkpoint(tmp_path / "fitted.pt", bundle)
    args = ["backtest", "--data", "obs.csv", "--model", "fitted.pt", "--unseen", "--out", "u", "--device", "cpu"]
    code, out = _run_on_a_terminal(args, tmp_path)
    assert code == 0, out[-2000:]
    assert "━" in out and "(last point of 20 series held out" in out and "note:" not in out


def test_evaluate_is_the_backtest_and_needs_no_checkout(toy, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from latentcast.cli import app

    monkeypatch.chdir(tmp_path)  # no bench/ here: a pip install's view
    _table().to_csv("obs.csv", index=False)
    res = CliRunner().invoke(app, ["evaluate", "--data", "obs.csv", "--model", str(toy), "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "latent_ode" in res.output and (tmp_path / "runs" / "backtest_toy" / "scores.csv").exists()


def test_the_plot_draws_the_context_the_point_and_the_actuals(toy, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import latentcast.fanchart as fanchart

    seen: dict[str, object] = {}

    def spy(obs: pd.DataFrame, fc: pd.DataFrame, path: object, **kw: object) -> object:
        seen.update(obs=obs, fc=fc, **kw)
        return path

    monkeypatch.setattr(fanchart, "fan_chart", spy)
    table = _table()
    bt = latentcast.load(toy, device="cpu").backtest(table, task="half")
    bt.plot(tmp_path / "b.png", table, time_unit="day")
    obs, fc = seen["obs"], seen["fc"]
    assert isinstance(obs, pd.DataFrame) and isinstance(fc, pd.DataFrame)
    held = set(zip(bt.forecasts["id"], bt.forecasts["time"], strict=True))
    assert held and not held & set(zip(obs["id"], obs["time"], strict=True))  # context rows only
    assert "point" in fc.columns and "actual" not in fc.columns and seen["time_unit"] == "day"
    assert isinstance(seen["actuals"], pd.DataFrame) and len(seen["actuals"]) == len(held)
    base = seen["baseline"]  # LOCF, drawn beside the forecast
    assert isinstance(base, pd.DataFrame) and list(base.columns) == ["id", "time", "channel", "locf"]
    assert len(base) == len(bt.forecasts)


def test_series_the_model_was_fitted_on_are_counted_in_sample(toy) -> None:
    model = latentcast.load(toy, device="cpu")
    model.bundle.data["fitted_ids"] = ["s0", "s1", "elsewhere"]
    result = model.backtest(_table(), task="last")
    assert result.in_sample == 2
    assert "note: 2 of these 30 series were used to train or validate the model" in result.summary()


def test_the_verdict_also_weighs_mae_and_the_intervals_coverage() -> None:
    from latentcast.backtest import Backtest

    rows = [
        ("latent_ode", 0.5, 2.0, 0.5),
        ("locf", 0.9, 1.5, float("nan")),
        ("linear_trend", 1.2, 3.0, float("nan")),
    ]
    scores = pd.DataFrame(
        [
            {"method": m, "channel": "all", "points": 10, "nmse": n, "mae": a, "crps": a, "coverage50": c,
             "coverage80": c, "coverage95": c}
            for m, n, a, c in rows
        ]
    )  # fmt: skip
    said = Backtest(scores, pd.DataFrame(), "half", 3, 10).verdict()
    assert said.startswith("the model beats both baselines on these series (NMSE)")
    assert "by MAE locf is closer (1.5 vs 2)" in said and "80% interval covers 50% (too narrow)" in said
    # the other way round: LOCF wins on NMSE, the model on MAE (a few large misses)
    scores.loc[scores["method"] == "latent_ode", ["nmse", "mae", "coverage80"]] = [1.0, 1.2, 0.8]
    said = Backtest(scores, pd.DataFrame(), "half", 3, 10).verdict()
    assert said.startswith("use locf instead: NMSE 0.900 against the model's 1.000")
    assert "but by MAE the model is closer (1.2 vs 1.5)" in said and "interval covers" not in said


def test_unseen_keeps_only_the_series_the_model_was_not_fitted_on(toy) -> None:
    from latentcast.backtest import unseen_series
    from latentcast.frames import DataError

    model = latentcast.load(toy, device="cpu")
    table = _table()
    model.bundle.data["fitted_ids"] = ["s0", "s1"]
    kept = unseen_series(model, table)
    assert set(kept["id"]) == set(table["id"]) - {"s0", "s1"}
    assert model.backtest(kept, task="last").in_sample == 0
    model.bundle.data["fitted_ids"] = sorted(set(table["id"]))
    with pytest.raises(DataError, match="no unseen series to score"):
        unseen_series(model, table)


def test_overall_coverage_counts_points_not_channels() -> None:
    """A channel with two held-out points must not weigh as much as one with ten in the overall coverage."""
    from latentcast.backtest import LEVELS, _scores
    from latentcast.frames import quantile_column

    rows = []
    for ch, n, actual in (("p", 10, 0.0), ("q", 2, 9.0)):  # p inside every interval, q outside all
        for k in range(n):
            q = {quantile_column(lv): lv - 0.5 for lv in LEVELS}  # intervals about 0, within (-0.5, 0.5)
            rows.append({"id": str(k), "channel": ch, "actual": actual + 0.01 * k, "point": 0.0, "locf": 0.0,
                         "linear_trend": 0.0, **q})  # fmt: skip
    scores = _scores(pd.DataFrame(rows), ["p", "q"]).set_index(["method", "channel"])
    assert scores.loc[("latent_ode", "p"), "coverage80"] == 1.0 and scores.loc[("latent_ode", "q"), "coverage80"] == 0
    assert scores.loc[("latent_ode", "all"), "coverage80"] == pytest.approx(10 / 12)
    assert scores.loc[("latent_ode", "all"), "nmse"] == pytest.approx(
        scores.xs("latent_ode")["nmse"][["p", "q"]].mean()
    )
