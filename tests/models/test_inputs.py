"""Known inputs (models/inputs.py): the compartments' closed form, what the checkpoint keeps, and a trained
model's answers under dosing plans: a larger planned dose raises the forecast after it and nothing before,
a dose after the last query changes nothing, and a series' forecast does not depend on the events of the
other series in its batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import latentcast
from bench.pkpd import make_pkpd
from latentcast.models import ModelBundle
from latentcast.models.inputs import BatchInputs, InputEffect, InputSpec, PackedInputs


def test_a_compartment_holds_each_event_decaying_after_its_time_and_nothing_before() -> None:
    spec = InputSpec(("dose",), (), (1.0,))
    effect = InputEffect(spec, n_channels=1, n_rates=2)
    with torch.no_grad():
        effect.log_rate.copy_(torch.tensor([0.1, 1.0]).log())
    inputs = BatchInputs(
        ev_t=torch.tensor([[1.0, 3.0]]), ev_v=torch.tensor([[[2.0], [5.0]]]), ev_m=torch.tensor([[True, True]]),
        static=torch.zeros(1, 0),
    )  # fmt: skip
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    got = effect.amounts(t, inputs)[0].detach()  # (T, J)
    for j, rate in enumerate((0.1, 1.0)):
        want = [0.0, 0.0, 2 * np.exp(-rate), 2 * np.exp(-2 * rate), 2 * np.exp(-3 * rate) + 5 * np.exp(-rate)]
        np.testing.assert_allclose(got[:, j].numpy(), want, rtol=1e-6)  # at an event's own time: not yet


def test_the_checkpoint_keeps_the_inputs_and_an_old_one_reads_as_none(pk_checkpoint: Path, tmp_path: Path) -> None:
    bundle = ModelBundle.load(pk_checkpoint)
    assert bundle.inputs.events == ("dose",) and bundle.inputs.static == ("weight",)
    assert bundle.inputs.event_scale[0] > 0 and 50 < bundle.inputs.static_mean[0] < 110
    again = ModelBundle.load(bundle.save(tmp_path / "again.pt"))
    assert again.inputs == bundle.inputs and again.version == bundle.version
    assert not ModelBundle.load("pbcseq").inputs  # a checkpoint from before inputs


def _history(subject: str, until: float) -> pd.DataFrame:
    table = make_pkpd(100, seed=7)  # subjects the fixture's model did not see (seed 1 trained it)
    return table[(table["id"] == subject) & (table["time"] < until)]


def _plan(history: pd.DataFrame, name: str, doses: list[tuple[float, float]]) -> pd.DataFrame:
    weight = float(history["weight"].iloc[0])
    rows = pd.DataFrame({"id": name, "time": [t for t, _ in doses], "dose": [d for _, d in doses], "weight": weight})
    return pd.concat([history.assign(id=name), rows], ignore_index=True)


@pytest.mark.parametrize("seed", range(6))
def test_a_larger_planned_dose_gives_a_higher_forecast_after_it_and_the_same_before(
    pk_checkpoint: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    model = latentcast.load(pk_checkpoint, device="cpu")
    subject = f"s{int(rng.integers(0, 100)):04d}"
    history = _history(subject, until=float(rng.uniform(30, 60)))
    if history["conc"].notna().sum() == 0:
        history = _history("s0000", until=60.0)
    at = float(history["time"].max()) + float(rng.uniform(1, 12))
    small, large = sorted(rng.choice([50.0, 100.0, 200.0, 300.0, 400.0, 600.0], 2, replace=False))
    obs = pd.concat([_plan(history, "small", [(at, small)]), _plan(history, "large", [(at, large)])])
    before = [at - 2.0, at - 0.5, at]
    after = [at + 0.25, at + 1.0, at + 4.0, at + 12.0]
    fc = model.predict(obs, query_times=before + after, quantiles=[0.5]).set_index(["id", "time"])
    lo, hi = fc.loc["small"], fc.loc["large"]
    np.testing.assert_array_equal(lo.loc[before, "point"].to_numpy(), hi.loc[before, "point"].to_numpy())
    assert (hi.loc[after, "point"] > lo.loc[after, "point"]).all(), (small, large, fc)
    assert (hi.loc[after, "mean"] > lo.loc[after, "mean"]).all()


def test_a_dose_after_the_last_query_time_changes_nothing(pk_checkpoint: Path) -> None:
    model = latentcast.load(pk_checkpoint, device="cpu")
    history = _history("s0003", until=48.0)
    queries = [50.0, 60.0, 72.0]
    without = model.predict(_plan(history, "a", [(49.0, 200.0)]), query_times=queries)
    later = model.predict(_plan(history, "a", [(49.0, 200.0), (72.0, 400.0), (90.0, 300.0)]), query_times=queries)
    pd.testing.assert_frame_equal(without, later)  # a dose at 72 counts from just after 72


def test_a_series_forecast_does_not_depend_on_the_other_series_events(pk_checkpoint: Path) -> None:
    model = latentcast.load(pk_checkpoint, device="cpu")
    table = make_pkpd(12, seed=5)
    queries = [20.0, 50.0, 100.0]
    quiet = model.predict(table, query_times=queries)
    weight = float(table.loc[table["id"] == "s0007", "weight"].iloc[0])
    extra = pd.DataFrame({"id": "s0007", "time": np.arange(1.0, 120.0, 2.0) + 0.01, "dose": 75.0, "weight": weight})
    busy = model.predict(pd.concat([table, extra]), query_times=queries)  # one series gets 60 more doses
    others = quiet["id"] != "s0007"
    pd.testing.assert_frame_equal(quiet[others], busy[others], check_exact=True)
    assert not np.allclose(quiet.loc[~others, "point"], busy.loc[~others, "point"])
    alone = model.predict(table[table["id"] == "s0004"], query_times=queries).reset_index(drop=True)
    mine = quiet[quiet["id"] == "s0004"].reset_index(drop=True)  # alone vs in a batch: as without inputs
    pd.testing.assert_frame_equal(alone, mine, check_exact=False, rtol=1e-4)


def test_inputs_the_table_lacks_are_answered_with_a_warning(pk_checkpoint: Path) -> None:
    model = latentcast.load(pk_checkpoint, device="cpu")
    history = _history("s0002", until=48.0)[["id", "time", "conc"]].dropna()
    with pytest.warns(latentcast.LatentcastWarning, match="inputs not in the table"):
        fc = model.predict(history, query_times=[60.0])
    assert np.isfinite(fc["point"]).all()
    assert any(w["kind"] == "missing_inputs" for w in fc.attrs["warnings"])


def test_inputs_outside_training_are_warned_about_refused_when_strict_and_float32_overflow_is_refused(
    pk_checkpoint: Path,
) -> None:
    history = _history("s0003", until=48.0)
    plan = _plan(history, "a", [(50.0, 1_000.0)])
    model = latentcast.load(pk_checkpoint, device="cpu")
    with pytest.warns(latentcast.LatentcastWarning, match="more than twice the largest"):
        fc = model.predict(plan, query_times=[60.0])
    assert [w["kind"] for w in fc.attrs["warnings"]] == ["unusual_value"]
    with pytest.raises(latentcast.DataError, match="over 5 times the largest in training"):
        model.predict(_plan(history, "a", [(50.0, 40_000.0)]), query_times=[60.0])
    strict = latentcast.load(pk_checkpoint, device="cpu", warnings_as_errors=True)
    with pytest.raises(latentcast.DataError, match="more than twice the largest"):
        strict.predict(plan, query_times=[60.0])
    out = strict.predict(pd.concat([plan, _plan(history, "b", [(50.0, 200.0)])]), query_times=[60.0], on_error="skip")
    assert list(out["id"].unique()) == ["b"] and out.attrs["errors"][0]["id"] == "a"
    with pytest.raises(latentcast.DataError, match="column 'dose' holds 1e\\+300, beyond float32"):
        model.predict(_plan(history, "c", [(50.0, 1e300)]), query_times=[60.0])


def test_series_gains_train_save_and_keep_the_planning_properties(tmp_path: Path) -> None:
    from latentcast.models import ConfigError
    from latentcast.models.training import ModelConfig

    recipe = {"model": {"latent_dim": 3, "encoder_hidden": 8, "dynamics_hidden": 8, "input_gains": "series"}}
    table = make_pkpd(30, seed=4)
    model = latentcast.fit(table, ["conc"], events=["dose"], static=["weight"], time_unit="hour", epochs=2,
                           config=recipe, quiet=True, device="cpu")  # fmt: skip
    again = latentcast.load(model.save(tmp_path / "series.pt"), device="cpu")
    effect = again.bundle.model.effect
    assert again.bundle.config.input_gains == "series" and isinstance(effect, InputEffect)
    assert effect.state_gain is not None and effect.state_rate is not None
    history = _history("s0003", until=48.0)
    queries = [50.0, 60.0]
    without = again.predict(_plan(history, "a", [(49.0, 200.0)]), query_times=queries)
    later = again.predict(_plan(history, "a", [(49.0, 200.0), (60.0, 400.0)]), query_times=queries)
    pd.testing.assert_frame_equal(without, later)
    with pytest.raises(ConfigError, match="input_gains"):
        ModelConfig(input_gains="patient")  # type: ignore[arg-type]


def _level_inputs(spec: InputSpec) -> BatchInputs:
    """Two series: the first's infusion rate is 2 from t=1, 0 from t=4 and 1 from t=6, with a dose at 5 (a
    row with no rate: the rate holds); the second's rate is 3 from t=2 (its first value is a change from 0)."""
    rows = np.array([[np.nan, 2.0], [np.nan, 0.0], [1.0, np.nan], [np.nan, 1.0]])
    a = spec.held(np.array([1.0, 4.0, 5.0, 6.0]), rows, np.zeros(0))
    b = spec.held(np.array([2.0]), np.array([[np.nan, 3.0]]), np.zeros(0))
    return PackedInputs.from_series([a, b], 2, 0).batch(spec, anchors=np.zeros(2))


def test_a_level_reaches_its_value_as_the_integral_of_the_held_rate_and_a_missing_value_holds_it() -> None:
    spec = InputSpec(("dose", "rate"), (), (1.0, 1.0), levels=("rate",))
    effect = InputEffect(spec, n_channels=1, n_rates=2)
    with torch.no_grad():
        effect.log_rate.copy_(torch.tensor([0.1, 1.0]).log())
    inputs = _level_inputs(spec)
    np.testing.assert_allclose(inputs.ev_v[0, :, 1].numpy(), [2.0, -2.0, 0.0, 1.0])  # changes of the level
    t = torch.tensor([[0.5, 1.0, 2.5, 4.0, 5.5, 7.0, 12.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0]])
    got = effect.amounts(t, inputs)[..., 2:].detach().numpy()  # (B, T, J) the rate's compartments
    grid = np.arange(0.0, 12.0, 1e-4) + 5e-5  # midpoints: dA/dt = λ (level − A) integrated by brute force
    levels = [np.select([grid < 1, grid < 4, grid < 6], [0.0, 2.0, 0.0], 1.0), np.where(grid < 2, 0.0, 3.0)]
    for b, level in enumerate(levels):
        for j, lam in enumerate((0.1, 1.0)):
            want = [lam * np.sum(level * np.exp(-lam * (tq - grid)) * (grid < tq)) * 1e-4 for tq in t[b].tolist()]
            np.testing.assert_allclose(got[b, :, j], want, rtol=1e-3, atol=1e-6)
    dose = effect.amounts(t, inputs)[0, :, :2].detach().numpy()  # the dose at 5 is a bolus, as before
    np.testing.assert_allclose(dose[:, 1], [0, 0, 0, 0, np.exp(-0.5), np.exp(-2.0), np.exp(-7.0)], rtol=1e-6)


def test_levels_train_save_and_a_higher_planned_rate_raises_the_forecast(drip_checkpoint: Path) -> None:
    again = latentcast.load(drip_checkpoint, device="cpu")
    assert again.bundle.inputs.events == ("dose", "rate") and again.bundle.inputs.levels == ("rate",)
    kinds = {e["name"]: e["kind"] for e in again.bundle.inputs.describe()["events"]}
    assert kinds == {"dose": "event", "rate": "level"}
    other = make_pkpd(100, seed=7, infusion=True)
    history = other[(other["id"] == "s0005") & (other["time"] < 40.0)]
    weight = float(history["weight"].iloc[0])
    plans = [
        pd.concat([history.assign(id=name), pd.DataFrame({"id": name, "time": [41.0], "rate": [r], "weight": weight})])
        for name, r in (("low", 10.0), ("high", 40.0))
    ]
    before, after = [40.5, 41.0], [42.0, 45.0, 55.0]
    fc = again.predict(pd.concat(plans), query_times=before + after).set_index(["id", "time"])
    lo, hi = fc.loc["low"], fc.loc["high"]
    np.testing.assert_array_equal(lo.loc[before, "point"].to_numpy(), hi.loc[before, "point"].to_numpy())
    assert (hi.loc[after, "point"] > lo.loc[after, "point"]).all(), fc


def test_a_residual_decoder_adds_the_inputs_change_since_each_last_value_and_old_checkpoints_their_level(
    pk_checkpoint: Path, tmp_path: Path
) -> None:
    from latentcast.models.data import collate, series_from_frame
    from latentcast.models.latent_ode import LatentODE

    bundle = ModelBundle.load(pk_checkpoint)
    model = bundle.model
    assert isinstance(model, LatentODE) and model.effect is not None
    assert model.cfg.residual == "level" and model.cfg.input_effect == "change"
    series = series_from_frame(make_pkpd(8, seed=3), ["conc"], bundle.time, events=["dose"], static=["weight"])
    series = [s for s in series if len(s) >= 2]
    batch = collate(series, bundle.normalizer, [len(s) - 1 for s in series], model.cfg.anchor, bundle.inputs)
    mean, _ = model.encode(batch)
    last = batch.last_times()  # (B, 1): one channel
    with torch.no_grad():
        at_last = model.input_effect(batch, last, mean)
        later = model.input_effect(batch, last + 0.5, mean)
        level = model.effect(last + 0.5, batch.inputs, mean)  # what "level" adds
        base = model.effect(last, batch.inputs, mean)
    assert at_last is not None and later is not None
    np.testing.assert_allclose(at_last.numpy(), 0.0, atol=1e-6)  # no change yet: the last value stands
    np.testing.assert_allclose(later.numpy(), (level - base).numpy(), rtol=1e-5, atol=1e-6)
    payload = torch.load(pk_checkpoint, weights_only=True)
    del payload["config"]["input_effect"]  # a checkpoint written before the option
    torch.save(payload, tmp_path / "old.pt")
    assert ModelBundle.load(tmp_path / "old.pt").model.cfg.input_effect == "level"


def test_statics_in_the_dynamics_train_save_and_move_the_forecast(tmp_path: Path) -> None:
    from latentcast.models.latent_ode import LatentODE

    recipe = {"model": {"latent_dim": 3, "encoder_hidden": 8, "dynamics_hidden": 8, "static_inputs": "dynamics"}}
    model = latentcast.fit(make_pkpd(30, seed=4), ["conc"], events=["dose"], static=["weight"], time_unit="hour",
                           epochs=2, config=recipe, quiet=True, device="cpu")  # fmt: skip
    again = latentcast.load(model.save(tmp_path / "dyn.pt"), device="cpu")
    net = again.bundle.model
    assert isinstance(net, LatentODE) and net.n_const == 1 and net.dynamics.n_static == 1
    history = _history("s0003", until=48.0)
    light, heavy = history.assign(id="light", weight=50.0), history.assign(id="heavy", weight=110.0)
    fc = again.predict(pd.concat([light, heavy]), query_times=[50.0, 70.0]).set_index(["id", "time"])
    assert np.isfinite(fc["point"]).all()
    assert not np.allclose(fc.loc["light", "point"], fc.loc["heavy", "point"])


def test_inputs_train_through_the_adjoint_and_answer_at_every_accuracy(tmp_path: Path) -> None:
    from latentcast.models.latent_ode import LatentODE

    recipe = {"model": {"latent_dim": 3, "encoder_hidden": 8, "dynamics_hidden": 8, "solver": {"adjoint": True}}}
    model = latentcast.fit(make_pkpd(30, seed=4), ["conc"], events=["dose"], levels=[], static=["weight"],
                           time_unit="hour", epochs=2, config=recipe, quiet=True, device="cpu")  # fmt: skip
    net = model.bundle.model
    assert isinstance(net, LatentODE) and net.cfg.solver.adjoint and net.effect is not None
    assert float(net.effect.readout.weight.abs().sum()) > 0  # the inputs' readout learned through the adjoint
    history = _plan(_history("s0003", until=48.0), "a", [(49.0, 200.0)])
    answers = {level: model.predict(history, query_times=[50.0, 60.0], solver=level)["point"].to_numpy()
               for level in ("fast", "default", "precise")}  # fmt: skip
    assert all(np.isfinite(a).all() for a in answers.values())
    np.testing.assert_allclose(answers["default"], answers["precise"], rtol=1e-2)


def test_a_level_drives_the_vector_field_continuously_and_a_series_still_answers_alone(tmp_path: Path) -> None:
    from latentcast.models.latent_ode import LatentODE

    spec = InputSpec(("dose", "rate"), (), (1.0, 1.0), levels=("rate",))
    effect = InputEffect(spec, n_channels=1, n_rates=2)
    inputs = _level_inputs(spec)
    rates = effect.control_rate.tolist()
    for t in (0.5, 1.0, 3.0, 6.5, 12.0):
        got = effect.control(torch.tensor(t, dtype=torch.float64), inputs, torch.tensor([0, 1, 0])).numpy()
        changes = [[(1.0, 2.0), (4.0, -2.0), (6.0, 1.0)], [(2.0, 3.0)], [(1.0, 2.0), (4.0, -2.0), (6.0, 1.0)]]
        want = [[sum(d * (1 - np.exp(-lam * (t - tk))) for tk, d in c if tk < t) for lam in rates] for c in changes]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    recipe = {"model": {"latent_dim": 3, "encoder_hidden": 8, "dynamics_hidden": 8, "input_dynamics": "levels",
                        "solver": {"adjoint": True}}}  # fmt: skip
    table = make_pkpd(30, seed=4, infusion=True)
    model = latentcast.fit(table, ["conc"], events=["dose"], levels=["rate"], static=["weight"], time_unit="hour",
                           epochs=2, config=recipe, quiet=True, device="cpu")  # fmt: skip
    model = latentcast.load(model.save(tmp_path / "ctl.pt"), device="cpu")
    net = model.bundle.model
    assert isinstance(net, LatentODE) and net.dynamics.n_control == 4
    queries = [5.0, 30.0, 60.0, 100.0]  # 5 h lies before most series' last observation: backward rows too
    quiet = model.predict(table, query_times=queries)
    sid = str(table["id"].iloc[0])
    weight = float(table.loc[table["id"] == sid, "weight"].iloc[0])
    more = pd.DataFrame({"id": sid, "time": np.arange(1.0, 90.0, 3.0) + 0.01, "rate": 25.0, "weight": weight})
    busy = model.predict(pd.concat([table, more]), query_times=queries)
    others = quiet["id"] != sid
    pd.testing.assert_frame_equal(quiet[others], busy[others], check_exact=True)
    assert not np.allclose(quiet.loc[~others, "point"], busy.loc[~others, "point"])
    alone = model.predict(table[table["id"] == "s0004"], query_times=queries).reset_index(drop=True)
    mine = quiet[quiet["id"] == "s0004"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, mine, check_exact=False, rtol=1e-4)
