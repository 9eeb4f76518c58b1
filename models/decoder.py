"""Decoder: latent state → per-channel Gaussian mean, with a fixed or learned σ per channel."""

from __future__ import annotations

import math

import torch
from torch import nn

from latentcast.models.config import ModelConfig
from latentcast.models.dynamics import mlp


class Decoder(nn.Module):
    """z (…, L) → mean (…, D). `std` is (D,), in normalised units, floored at cfg.min_std."""

    def __init__(self, cfg: ModelConfig, n_channels: int):
        super().__init__()
        if cfg.decoder_hidden:
            self.net: nn.Module = mlp(cfg.latent_dim, cfg.decoder_hidden, 1, n_channels, cfg.activation)
        else:
            self.net = nn.Linear(cfg.latent_dim, n_channels)
        init = torch.full((n_channels,), math.log(cfg.obs_std - cfg.min_std))
        self.min_std = cfg.min_std
        if cfg.learn_std:
            self.log_std = nn.Parameter(init)
        else:
            self.register_buffer("log_std", init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.exp() + self.min_std


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ over observed entries of log N(x; mean, std²). x, mean, mask: (…, T, D); std (D,) → (…,)."""
    logp = -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
    return (logp * mask).sum(dim=(-1, -2))
