"""Stopping a forecast part-way: the encoder's walk and the solver's steps check `interruptible`'s
`wanted()` every few iterations and stop with `Interrupted` once it is False; outside such a block
nothing changes."""

from __future__ import annotations

import pytest
import torch

from latentcast.models import Forecaster, Interrupted, PackedSeries
from latentcast.models.config import SolverConfig
from latentcast.models.encoder import POLL_EVERY, ODERNNEncoder
from latentcast.models.interrupt import interruptible
from latentcast.models.latent_ode import LatentODE
from latentcast.models.solve import solve_per_series
from tests.conftest import tiny_config


class Wanted:
    """wanted() is True for the first `calls` checks, then False; counts the checks."""

    def __init__(self, calls: int):
        self.calls, self.seen = calls, 0

    def __call__(self) -> bool:
        self.seen += 1
        return self.seen <= self.calls


def _long_series(n: int = 2000) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 50, n)[None]  # (1, T)
    x = torch.randn(1, n, 3, generator=g)
    return t, x, torch.ones_like(x), torch.tensor([n])


def test_the_encoder_stops_within_a_few_steps_once_unwanted(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = ODERNNEncoder(tiny_config(encoder="odernn"), 3).eval()
    steps = []
    update = enc.update

    def counted(h: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        steps.append(1)
        return update(h, x, m)

    monkeypatch.setattr(enc, "update", counted)
    t, x, m, n = _long_series()
    wanted = Wanted(calls=3)
    with torch.no_grad(), interruptible(wanted), pytest.raises(Interrupted):
        enc(t, x, m, n)
    assert wanted.seen == 4  # stopped at the first check that said no
    assert len(steps) == 3 * POLL_EVERY  # not one step more of the 2,000


def test_outside_a_block_or_while_wanted_the_answer_is_unchanged() -> None:
    enc = ODERNNEncoder(tiny_config(encoder="odernn"), 3).eval()
    t, x, m, n = _long_series(300)
    with torch.no_grad():
        plain = enc(t, x, m, n)
        with interruptible(lambda: True):
            watched = enc(t, x, m, n)
    torch.testing.assert_close(watched, plain, rtol=0, atol=0)


def test_the_solver_stops_between_steps_once_unwanted() -> None:
    rot = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    z0 = torch.ones(2, 2, dtype=torch.float64)
    t = torch.tensor([[500.0], [400.0]], dtype=torch.float64)  # thousands of steps at this tolerance
    cfg = SolverConfig(rtol=1e-9, atol=1e-11, max_num_steps=1_000_000)
    wanted = Wanted(calls=2)
    with interruptible(wanted), pytest.raises(Interrupted):
        solve_per_series(lambda _t, z: z @ rot.T, z0, t, cfg, sync_every=4)
    assert wanted.seen == 3


def test_a_forecaster_stops_part_way_when_its_caller_no_longer_wants_it(series, normalizer) -> None:
    """`Forecaster.predict_packed(wanted=...)`: the service's way to stop a slice nobody waits for."""
    torch.manual_seed(0)
    fc = Forecaster(LatentODE(tiny_config(), len(normalizer.channels)), normalizer, num_samples=4)
    packed = PackedSeries.from_series(series[:2], [s.times[-1:] + 1.0 for s in series[:2]])
    with pytest.raises(Interrupted):
        fc.predict_packed(packed, wanted=lambda: False)
    assert len(fc.predict_packed(packed, wanted=lambda: True)) == 2
