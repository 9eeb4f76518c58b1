"""Shared fixtures: tiny seeded models and small irregular series, CPU only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentcast.models.config import ModelConfig, SolverConfig
from latentcast.models.data import Normalizer, Series


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def make_series(n_series: int = 6, d: int = 3, seed: int = 0, missing: float = 0.3) -> list[Series]:
    """Irregular sine-like series with random lengths, times and missing values (never a fully empty row)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_series):
        n = int(rng.integers(3, 12))
        t = np.sort(rng.uniform(0, 5, n)) + rng.uniform(0, 100)
        phase = rng.uniform(0, 2 * np.pi, d)
        v = (np.sin(t[:, None] + phase) + 2 + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
        drop = rng.random((n, d)) < missing
        drop[np.arange(n), rng.integers(0, d, n)] = False  # keep ≥ 1 channel per row
        v[drop] = np.nan
        out.append(Series(id=f"s{i}", times=t, values=v))
    return out


@pytest.fixture
def series() -> list[Series]:
    return make_series()


@pytest.fixture
def normalizer(series: list[Series]) -> Normalizer:
    return Normalizer.fit(series, ("a", "b", "c"), ("b",))


def tiny_config(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        latent_dim=4,
        encoder_hidden=8,
        encoder_ode_hidden=8,
        dynamics_hidden=16,
        decoder_hidden=8,
        solver=SolverConfig(rtol=1e-5, atol=1e-6),
    )
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pk_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained with doses and weight on 100 subjects of the synthetic PK table (bench/pkpd.py,
    seeded), saved to disk: a real checkpoint with inputs, for the counterfactual and serving tests."""
    import latentcast
    from bench.pkpd import make_pkpd

    table = make_pkpd(100, seed=1)
    recipe = {"model": {"latent_dim": 4, "encoder_hidden": 16, "dynamics_hidden": 16}, "train": {"batch_size": 25}}
    model = latentcast.fit(
        table, ["conc"], events=["dose"], static=["weight"], time_unit="hour", epochs=25, config=recipe, quiet=True,
        device="cpu",
    )  # fmt: skip
    return model.save(tmp_path_factory.mktemp("pk") / "pk.pt")


@pytest.fixture(scope="session")
def drip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As `pk_checkpoint`, on the table whose subjects also get piecewise-constant infusions: doses as events,
    the infusion rate as a level (`levels=["rate"]`), weight as a static."""
    import latentcast
    from bench.pkpd import make_pkpd

    table = make_pkpd(100, seed=1, infusion=True)
    recipe = {"model": {"latent_dim": 4, "encoder_hidden": 16, "dynamics_hidden": 16}, "train": {"batch_size": 25}}
    model = latentcast.fit(
        table, ["conc"], events=["dose"], levels=["rate"], static=["weight"], time_unit="hour", epochs=25,
        config=recipe, quiet=True, device="cpu",
    )  # fmt: skip
    return model.save(tmp_path_factory.mktemp("drip") / "drip.pt")
