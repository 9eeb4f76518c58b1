"""The RNN baseline of Chen et al. (2018), Table 2: an autoregressive GRU whose inputs are the
observations concatenated with the time gap Δt, with a Gaussian likelihood.

At each time point the GRU reads the previous point ([x·m, m, Δt]) and predicts the current one.
Context points feed their observations; forecast points feed the model's own prediction (m = 0), so
training and forecasting see the same thing. Trained by the same `models.training.train` code as the
latent ODE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from latentcast.models.config import ModelConfig, SolverConfig
from latentcast.models.data import Batch
from latentcast.models.decoder import Decoder, gaussian_log_density
from latentcast.models.device import ThreadPolicy, intra_op_threads
from latentcast.models.latent_ode import LossStats, Prediction


class RNNBaseline(nn.Module):
    def __init__(self, cfg: ModelConfig, n_channels: int):
        super().__init__()
        self.cfg = cfg
        self.n_channels = n_channels
        self.hidden = cfg.encoder_hidden
        self.cell = nn.GRUCell(2 * n_channels + 1, cfg.encoder_hidden)
        self.decoder = Decoder(dataclasses.replace(cfg, latent_dim=cfg.encoder_hidden), n_channels)

    def _run(
        self, t: torch.Tensor, x: torch.Tensor, m: torch.Tensor, feed: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """t (B, T) chronological, x/m (B, T, D), feed (B, T) bool, lengths (B,) → means (B, T, D)."""
        b, tmax, d = x.shape
        h = x.new_zeros(b, self.hidden)
        prev_t = t[:, 0]
        in_x, in_m = x.new_zeros(b, d), x.new_zeros(b, d)
        outs = []
        for j in range(tmax):
            valid = j < lengths  # (B,)
            dt = (t[:, j] - prev_t)[:, None]
            h = torch.where(valid[:, None], self.cell(torch.cat([in_x, in_m, dt], -1), h), h)
            mu = self.decoder(h)  # (B, D)
            outs.append(mu)
            fed = m[:, j] * feed[:, j, None]
            in_x = torch.where(fed > 0, x[:, j], mu)
            in_m = fed
            prev_t = torch.where(valid, t[:, j], prev_t)
        return torch.stack(outs, dim=1)

    def loss(
        self,
        batch: Batch,
        kl_weight: float = 1.0,
        iwae_samples: int = 1,
        forecast_only: bool = False,
        max_times: int = 0,
        channel_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LossStats]:
        """Negative Gaussian log-likelihood per scored target value (no latent, so no KL); the
        arguments as LatentODE.loss's."""
        lengths = batch.tgt_m.any(-1).sum(1)
        means = self._run(batch.tgt_t, batch.tgt_x, batch.tgt_m, ~batch.tgt_future, lengths)
        mask = batch.likelihood_mask(forecast_only)
        weighted = mask if channel_weight is None else mask * channel_weight
        loglik = gaussian_log_density(batch.tgt_x, means, self.decoder.std, weighted)  # (B,)
        n_obs = mask.sum().clamp(min=1)
        loss = -loglik.sum() / n_obs
        with torch.no_grad():
            mse = float((((means - batch.tgt_x) ** 2) * mask).sum() / n_obs)
        return loss, LossStats(float(loss.detach()), 0.0, mse, 0)

    @torch.no_grad()
    def predict(
        self,
        batch: Batch,
        query_t: torch.Tensor,
        num_samples: int = 0,
        levels: Sequence[float] = (),
        include_noise: bool = True,
        return_samples: bool = False,
        solver: SolverConfig | None = None,
        graphs: object = None,
        stats_samples: int | None = None,
        deadline: torch.Tensor | None = None,
        spread: torch.Tensor | None = None,
        threads: ThreadPolicy | None = None,
        persistence: torch.Tensor | None = None,
    ) -> Prediction:
        """Forecast at query times after each series' context (the RNN cannot go back in time)."""
        with intra_op_threads(batch.ctx_x.shape[0] * max(num_samples, 1), batch.ctx_x.device, threads):
            b, q = query_t.shape
            last = batch.ctx_t.gather(1, (batch.ctx_len - 1)[:, None])  # (B, 1)
            if bool((query_t < last).any()):
                raise ValueError("the RNN baseline forecasts only at times after the context")
            tq, order = query_t.sort(dim=1)
            tc = batch.ctx_t.shape[1]
            j = torch.arange(tc + q, device=query_t.device).expand(b, -1)
            is_ctx = j < batch.ctx_len[:, None]
            ci = j.clamp(max=tc - 1)
            qi = (j - batch.ctx_len[:, None]).clamp(0, q - 1)
            t = torch.where(is_ctx, batch.ctx_t.gather(1, ci), tq.gather(1, qi))
            x = torch.where(
                is_ctx[..., None], batch.ctx_x.gather(1, ci[..., None].expand(-1, -1, self.n_channels)), 0.0
            )
            m = torch.where(
                is_ctx[..., None], batch.ctx_m.gather(1, ci[..., None].expand(-1, -1, self.n_channels)), 0.0
            )
            means = self._run(t, x, m, is_ctx, batch.ctx_len + q)
            pos = batch.ctx_len[:, None] + torch.arange(q, device=query_t.device)  # (B, Q)
            sorted_means = means.gather(1, pos[..., None].expand(-1, -1, self.n_channels))
            mean = torch.empty_like(sorted_means).scatter_(1, order[..., None].expand_as(sorted_means), sorted_means)
            if persistence is not None:  # as the latent ODE: toward each channel's last value near it
                hold = batch.hold_weight(query_t, persistence)
                mean = mean + hold * (batch.last_observed()[:, None, :] - mean)
            lv = torch.as_tensor(list(levels), dtype=mean.dtype, device=mean.device)
            sd = self.decoder.std if include_noise else torch.zeros_like(self.decoder.std)
            quant = mean[None] + torch.special.ndtri(lv).view(-1, 1, 1, 1) * sd
            status = torch.zeros(b, dtype=torch.long, device=mean.device)
            return Prediction(mean, quant, tuple(levels), mean[None] if return_samples else None, status, 0)
