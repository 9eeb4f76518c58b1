from __future__ import annotations

import pytest
import torch

from latentcast.models.data import collate
from latentcast.models.encoder import make_encoder, processing_order
from tests.conftest import tiny_config


@pytest.mark.parametrize("encoder", ["gru", "decay", "odernn"])
@pytest.mark.parametrize("anchor", ["first", "last"])
def test_encoder_shapes_and_padding_invariance(series, normalizer, encoder: str, anchor: str) -> None:
    cfg = tiny_config(encoder=encoder, anchor=anchor)
    enc = make_encoder(cfg, 3).eval()
    batch = collate(series, normalizer, anchor=anchor)
    with torch.no_grad():
        mean, logvar = enc(batch.ctx_t, batch.ctx_x, batch.ctx_m, batch.ctx_len)
        assert mean.shape == (len(series), 4) and logvar.shape == (len(series), 4)
        for i in range(len(series)):
            one = collate(series[i : i + 1], normalizer, anchor=anchor)
            m1, v1 = enc(one.ctx_t, one.ctx_x, one.ctx_m, one.ctx_len)
            torch.testing.assert_close(m1[0], mean[i], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(v1[0], logvar[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoder", ["gru", "decay", "odernn"])
def test_masked_values_do_not_matter_observed_values_do(series, normalizer, encoder: str) -> None:
    enc = make_encoder(tiny_config(encoder=encoder), 3).eval()
    batch = collate(series, normalizer)
    with torch.no_grad():
        ref, _ = enc(batch.ctx_t, batch.ctx_x, batch.ctx_m, batch.ctx_len)
        hidden = batch.ctx_x + 100.0 * (1 - batch.ctx_m)  # change only unobserved entries
        same, _ = enc(batch.ctx_t, hidden, batch.ctx_m, batch.ctx_len)
        seen = batch.ctx_x + 1.0 * batch.ctx_m
        moved, _ = enc(batch.ctx_t, seen, batch.ctx_m, batch.ctx_len)
    torch.testing.assert_close(same, ref)
    assert (moved - ref).abs().max() > 1e-3


def test_processing_order_reverses_the_valid_part_only() -> None:
    t = torch.tensor([[0.0, 1.0, 3.0], [0.0, 2.0, 0.0]])
    x = t[..., None].clone()
    m = torch.ones_like(x)
    lengths = torch.tensor([3, 2])
    xp, mp, dt = processing_order(t, x, m, lengths, "first")
    assert xp[0, :, 0].tolist() == [3.0, 1.0, 0.0]
    assert xp[1, :2, 0].tolist() == [2.0, 0.0] and mp[1, 2, 0] == 0
    assert dt[0, :, 0].tolist() == [0.0, 2.0, 1.0]
    assert dt[1, :, 0].tolist() == [0.0, 2.0, 0.0]
    xp, _, dt = processing_order(t, x, m, lengths, "last")
    assert xp[0, :, 0].tolist() == [0.0, 1.0, 3.0] and dt[0, :, 0].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("substeps", [1, 2, 3])
def test_odernn_evolution_is_torchdiffeqs_rk4(substeps: int) -> None:
    from torchdiffeq import odeint

    from latentcast.models.encoder import ODERNNEncoder

    enc = ODERNNEncoder(tiny_config(encoder="odernn", encoder_substeps=substeps), 3).double()
    h = torch.randn(5, 8, dtype=torch.float64)
    dt = torch.rand(5, 1, dtype=torch.float64) * 2
    grid = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ref = odeint(lambda _s, hh: enc.g(hh) * dt, h, grid, method="rk4", options={"step_size": 1.0 / substeps})[-1]
    torch.testing.assert_close(enc.evolve(h, dt), ref, rtol=1e-12, atol=1e-12)
