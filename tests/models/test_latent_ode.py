from __future__ import annotations

import pytest
import torch

from latentcast.models.data import collate
from latentcast.models.latent_ode import LatentODE, gather_times
from tests.conftest import make_series, tiny_config


def _queries(batch, q: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch.size, q, generator=g) - 0.2) * 6  # before, between and after the observations


@pytest.mark.parametrize(("encoder", "static"), [("gru", ()), ("odernn", ()), ("decay", (0, 2))])
@pytest.mark.parametrize("anchor", ["first", "last"])
def test_prediction_is_batch_invariant(normalizer, encoder: str, static: tuple[int, ...], anchor: str) -> None:
    """A series' forecast must not change (beyond 1e-4 relative) with whatever else is in the batch."""
    many = make_series(24, seed=1)
    model = LatentODE(tiny_config(encoder=encoder, anchor=anchor, static_channels=static), 3).eval()
    batch = collate(many, normalizer, anchor=anchor)
    q = _queries(batch)
    together = model.predict(batch, q, num_samples=8, levels=(0.1, 0.5, 0.9))
    for i in (0, 5, 23):
        one = collate(many[i : i + 1], normalizer, anchor=anchor)
        alone = model.predict(one, q[i : i + 1], num_samples=8, levels=(0.1, 0.5, 0.9))
        torch.testing.assert_close(alone.mean[0], together.mean[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(alone.quantiles[:, 0], together.quantiles[:, i], rtol=1e-4, atol=1e-5)


def test_prediction_shapes_and_monotone_quantiles(series, normalizer) -> None:
    model = LatentODE(tiny_config(learn_std=True), 3).eval()
    batch = collate(series, normalizer)
    q = _queries(batch, 5)
    p = model.predict(batch, q, num_samples=16, levels=(0.05, 0.5, 0.95), return_samples=True)
    n = len(series)
    assert p.mean.shape == (n, 5, 3) and p.quantiles.shape == (3, n, 5, 3)
    assert p.samples is not None and p.samples.shape == (16, n, 5, 3)
    assert (p.quantiles[1:] >= p.quantiles[:-1]).all()
    assert (p.status == 0).all() and p.nfe > 0
    torch.testing.assert_close(p.mean, p.samples.mean(0))


def test_zero_samples_gives_the_posterior_mean_trajectory(series, normalizer) -> None:
    model = LatentODE(tiny_config(), 3).eval()
    batch = collate(series, normalizer)
    q = _queries(batch, 4)
    p = model.predict(batch, q, num_samples=0, levels=(0.5,), include_noise=False)
    torch.testing.assert_close(p.quantiles[0], p.mean)  # one sample, no noise: its median is itself


def test_predict_agrees_with_the_training_path(series, normalizer) -> None:
    """The per-series inference solver and the torchdiffeq training solve give the same trajectory."""
    model = LatentODE(tiny_config(), 3).eval()
    batch = collate(series, normalizer)
    with torch.no_grad():
        mean, _ = model.encode(batch)
        t_union, idx = gather_times(batch)
        from latentcast.models.solve import odeint_grid

        zs = odeint_grid(model.dynamics, mean, t_union, model.cfg.solver)
        ref = model.decoder(zs.gather(1, idx[..., None].expand(-1, -1, 4)))
    p = model.predict(batch, batch.tgt_t, num_samples=0)
    valid = batch.tgt_m.any(-1)
    torch.testing.assert_close(p.mean[valid], ref[valid], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("iwae", [1, 4])
def test_loss_is_finite_and_differentiable(series, normalizer, iwae: int) -> None:
    model = LatentODE(tiny_config(encoder="odernn", learn_std=True), 3)
    batch = collate(series, normalizer, [2] * len(series))
    loss, stats = model.loss(batch, kl_weight=0.5, iwae_samples=iwae)
    loss.backward()
    assert torch.isfinite(loss) and stats.nfe > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.decoder.log_std.grad is not None and model.decoder.log_std.grad.abs().sum() > 0


def test_adjoint_gives_the_same_gradients(series, normalizer) -> None:
    from dataclasses import replace

    cfg = tiny_config()
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = LatentODE(replace(cfg, solver=replace(cfg.solver, adjoint=adjoint)), 3)
        batch = collate(series, normalizer)
        torch.manual_seed(1)
        loss, _ = model.loss(batch)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.dynamics.parameters() if p.grad is not None]))
    # the adjoint re-solves backwards to tolerance, so gradients agree to solver accuracy, not bitwise
    assert float((grads[0] - grads[1]).norm() / grads[0].norm()) < 1e-2


def test_forecast_only_likelihood_ignores_context_targets(series, normalizer) -> None:
    model = LatentODE(tiny_config(), 3)
    batch = collate(series, normalizer, [2] * len(series))
    moved = collate(series, normalizer, [2] * len(series))
    moved.tgt_x[:, :2] += 3.0  # only the context's targets (the encoder input ctx_x is untouched)
    for forecast_only, should_change in ((True, False), (False, True)):
        torch.manual_seed(0)
        a, _ = model.loss(batch, forecast_only=forecast_only)
        torch.manual_seed(0)
        b, _ = model.loss(moved, forecast_only=forecast_only)
        assert bool(torch.isclose(a, b)) != should_change
    none = collate(series, normalizer)  # context = everything: nothing left to forecast
    loss, _ = model.loss(none, forecast_only=True)
    assert torch.isfinite(loss)


def test_max_times_scores_a_random_subset_of_a_batchs_times(series, normalizer, monkeypatch) -> None:
    import latentcast.models.latent_ode as lo

    seen: list[int] = []
    real = lo.odeint_grid

    def spy(func, z0, t, cfg):
        seen.append(len(t))
        return real(func, z0, t, cfg)

    monkeypatch.setattr(lo, "odeint_grid", spy)
    model = LatentODE(tiny_config(), 3)
    batch = collate(series, normalizer)
    full, _ = model.loss(batch)
    sub, _ = model.loss(batch, max_times=5)
    assert seen[0] > 5 and seen[1] <= 5
    a, b = float(full.detach()), float(sub.detach())
    assert abs(b - a) / abs(a) < 1.0  # the same scale


def test_static_channels_condition_the_dynamics_and_stay_constant(series, normalizer) -> None:
    torch.manual_seed(0)
    model = LatentODE(tiny_config(static_channels=(1,)), 3)
    batch = collate(series, normalizer)
    state = model.with_static(torch.zeros(batch.size, 4), batch.last_observed(), batch)
    assert state.shape == (batch.size, 5)
    torch.testing.assert_close(state[:, 4], batch.last_observed()[:, 1])
    d = model.dynamics(torch.tensor(0.0), state)
    assert (d[:, 4] == 0).all()  # the static input does not move
    moved = state.clone()
    moved[:, 4] += 1.0
    assert (model.dynamics(torch.tensor(0.0), moved)[:, :4] - d[:, :4]).abs().max() > 1e-4
    loss, _ = model.loss(batch)
    loss.backward()
    first = model.dynamics.net[0]
    assert isinstance(first, torch.nn.Linear) and first.weight.grad is not None
    assert first.weight.grad[:, 4].abs().sum() > 0  # the loss reaches the static input's weights
    with pytest.raises(ValueError, match="static_channels"):
        LatentODE(tiny_config(static_channels=(3,)), 3)
    with pytest.raises(ValueError, match="static_channels"):
        tiny_config(static_channels=(1, 1))


def test_static_channels_forecast_through_the_linear_readout_as_a_plain_solve(series, normalizer) -> None:
    from torchdiffeq import odeint

    torch.manual_seed(1)
    model = LatentODE(tiny_config(static_channels=(0, 2), decoder_hidden=0, anchor="last", residual="level"), 3)
    model.eval()
    batch = collate(series, normalizer, anchor="last")
    q = torch.linspace(0.1, 2.0, 4).expand(batch.size, 4)
    got = model.predict(batch, q, num_samples=0, include_noise=False).mean  # (B, Q, D)
    assert model.readout() is model.readout()  # one module: cached CUDA graphs stay valid
    assert "_readout" not in model.state_dict() and not any("_readout" in k for k in model.state_dict())
    mean, _ = model.encode(batch)
    state = model.with_static(mean, batch.last_observed(), batch)  # (B, L + S)
    ts = torch.cat([torch.zeros(1), q[0]])
    zs = odeint(model.dynamics, state, ts, rtol=1e-7, atol=1e-8)[1:, :, :4]  # (Q, B, L)
    ref = model.decoder(zs).transpose(0, 1) + batch.last_observed()[:, None, :]
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)
