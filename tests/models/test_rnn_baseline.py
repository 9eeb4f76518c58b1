from __future__ import annotations

import pytest
import torch

from latentcast.models.data import collate
from latentcast.models.rnn_baseline import RNNBaseline
from tests.conftest import tiny_config


def test_forecast_is_autoregressive_after_the_context(series, normalizer) -> None:
    model = RNNBaseline(tiny_config(kind="rnn"), 3).eval()
    batch = collate(series, normalizer, [2] * len(series))
    last = batch.ctx_t[:, 1:2]
    q = last + torch.tensor([[0.5, 0.1, 1.0]])  # unsorted, after the context
    p = model.predict(batch, q, levels=(0.1, 0.9))
    assert p.mean.shape == (len(series), 3, 3) and (p.quantiles[0] < p.quantiles[1]).all()
    # answering in the given order == answering sorted and permuting
    s = model.predict(batch, q.sort(1).values)
    torch.testing.assert_close(p.mean[:, 0], s.mean[:, 1])
    with pytest.raises(ValueError, match="after the context"):
        model.predict(batch, last - 1.0)


def test_loss_only_feeds_context_observations(series, normalizer) -> None:
    model = RNNBaseline(tiny_config(kind="rnn"), 3)
    batch = collate(series, normalizer, [2] * len(series))
    loss, _ = model.loss(batch)
    # changing a forecast-window value changes the loss (it is a target) ...
    moved = collate(series, normalizer, [2] * len(series))
    moved.tgt_x[:, -1] += 5 * moved.tgt_future[:, -1, None]
    loss2, _ = model.loss(moved)
    assert not torch.isclose(loss, loss2)
    # ... but never the prediction of an earlier point (it is not fed back in)
    lengths = batch.tgt_m.any(-1).sum(1)
    a = model._run(batch.tgt_t, batch.tgt_x, batch.tgt_m, ~batch.tgt_future, lengths)
    b = model._run(moved.tgt_t, moved.tgt_x, moved.tgt_m, ~moved.tgt_future, lengths)
    torch.testing.assert_close(a, b)
