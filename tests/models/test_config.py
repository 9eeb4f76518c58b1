from __future__ import annotations

import pytest

from latentcast.models.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    SolverConfig,
    from_dict,
    load_config_file,
    merge,
    to_dict,
)
from latentcast.models.training.recipes import build_experiment


def test_round_trip_through_plain_dicts() -> None:
    exp = build_experiment("spirals")
    assert from_dict(ExperimentConfig, to_dict(exp)) == exp
    assert exp.model.solver.method == "dopri5" and exp.data.n_obs == (30, 50, 100)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"method": "rk45"}, r"solver\.method.*not one of"),
        ({"rtol": 0}, r"solver\.rtol"),
        ({"max_num_steps": 0}, r"solver\.max_num_steps"),
    ],
)
def test_solver_settings_are_checked_and_named(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SolverConfig(**values)


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"model\.solver\.: unknown keys \['tol'\]"):
        from_dict(ExperimentConfig, {"model": {"solver": {"tol": 1}}})
    with pytest.raises(ConfigError, match=r"model\.encoder"):
        ModelConfig(encoder="lstm")  # type: ignore[arg-type]


def test_files_and_overrides(tmp_path) -> None:
    (tmp_path / "c.toml").write_text("[train]\nepochs = 7\n[model.solver]\nmethod = 'rk4'\n")
    (tmp_path / "c.json").write_text('{"train": {"epochs": 8}}')
    exp = build_experiment("spirals", tmp_path / "c.toml", train={"seed": 5})
    assert exp.train.epochs == 7 and exp.train.seed == 5 and exp.model.solver.method == "rk4"
    assert exp.model.latent_dim == 8  # untouched recipe values survive
    assert load_config_file(tmp_path / "c.json") == {"train": {"epochs": 8}}
    with pytest.raises(ConfigError, match=r"toml or \.json"):
        load_config_file(tmp_path / "c.yaml")
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_a_user_tables_settings_leave_out_the_spirals_generator_and_read_back_the_same() -> None:
    from latentcast.models.config import SPIRALS_ONLY, DataConfig, ExperimentConfig, from_dict, to_dict

    user = ExperimentConfig(DataConfig(name="visits.csv", channels=("hr",)))
    shown = to_dict(user)
    assert not set(SPIRALS_ONLY) & set(shown["data"]) and from_dict(ExperimentConfig, shown) == user
    spirals = ExperimentConfig(DataConfig(name="spirals", n_series=10))
    assert to_dict(spirals)["data"]["n_series"] == 10 and from_dict(ExperimentConfig, to_dict(spirals)) == spirals
    assert "noise_std" not in to_dict(DataConfig(name="visits.csv"))
