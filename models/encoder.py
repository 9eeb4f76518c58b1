"""Recognition networks q(z0 | observations): a GRU (Chen et al. 2018), a GRU with per-channel input decay
(GRU-D's inputs, Che et al. 2018), an ODE-RNN (Rubanova et al. 2019) or a continuous-update posterior
(GRU-ODE-Bayes, De Brouwer et al. 2019).

All read the context in *processing order*: backwards in time when z0 sits at the first observation
(anchor "first"), forwards when it sits at the last (anchor "last"), so the last point read is always
the anchor. Inputs per point: [x · mask, mask, Δt] where Δt is the gap to the previously read point.
Padding (positions ≥ length) never changes the state, so a series encodes the same in any batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from latentcast.models.config import ModelConfig
from latentcast.models.dynamics import mlp
from latentcast.models.interrupt import poll

POLL_EVERY = 32  # encoder steps between checks that someone still wants the answer


def processing_order(
    t: torch.Tensor, x: torch.Tensor, m: torch.Tensor, lengths: torch.Tensor, anchor: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reorder (B, T, …) chronological padded context into processing order.

    Returns x (B, T, D), m (B, T, D) and dt (B, T, 1) with dt[:, 0] = 0 and |t_j - t_{j-1}| after.
    """
    b, tmax = t.shape
    j = torch.arange(tmax, device=t.device).expand(b, tmax)
    valid = j < lengths[:, None]
    if anchor == "first":  # (B, T): reverse the valid part, padding stays after it
        idx = (lengths[:, None] - 1 - j).clamp(min=0)
        tp = t.gather(1, idx)
        xp = x.gather(1, idx[..., None].expand_as(x))
        mp = m.gather(1, idx[..., None].expand_as(m)) * valid[..., None]
    else:  # chronological already
        tp, xp, mp = t, x, m * valid[..., None]
    dt = torch.zeros_like(tp)
    dt[:, 1:] = (tp[:, 1:] - tp[:, :-1]).abs()
    dt = dt * valid
    return xp * mp, mp, dt[..., None]


def reorder(extra: torch.Tensor, lengths: torch.Tensor, anchor: str) -> torch.Tensor:
    """Per-point extra inputs (B, T, X), chronological → processing order (as `processing_order`), 0 on
    padding."""
    b, tmax, _ = extra.shape
    j = torch.arange(tmax, device=extra.device).expand(b, tmax)
    valid = (j < lengths[:, None])[..., None]
    if anchor == "first":
        idx = (lengths[:, None] - 1 - j).clamp(min=0)
        extra = extra.gather(1, idx[..., None].expand_as(extra))
    return extra * valid


class GRUEncoder(nn.Module):
    """GRU over processing-ordered [x·m, m, Δt] (and `n_extra` known inputs per point, `models.inputs`);
    final state → (mean, log-variance) of z0."""

    inputs_per_channel = 2

    def __init__(self, cfg: ModelConfig, n_channels: int, n_extra: int = 0):
        super().__init__()
        self.anchor = cfg.anchor
        self.gru = nn.GRU(self.inputs_per_channel * n_channels + 1 + n_extra, cfg.encoder_hidden, batch_first=True)
        self.out = nn.Linear(cfg.encoder_hidden, 2 * cfg.latent_dim)

    def inputs(self, xp: torch.Tensor, mp: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """Processing-ordered x·m, m (B, T, D) and Δt (B, T, 1) → the GRU's inputs (B, T, 2D + 1)."""
        return torch.cat([xp, mp, dt], dim=-1)

    def forward(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        m: torch.Tensor,
        lengths: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.inputs(*processing_order(t, x, m, lengths, self.anchor))
        if extra is not None:
            inputs = torch.cat([inputs, reorder(extra, lengths, self.anchor)], dim=-1)
        n = lengths.cpu()
        if bool((n == inputs.shape[1]).all()):  # no padding (e.g. one series): the GRU reads it as is
            _, h = self.gru(inputs)  # h: (1, B, H)
        else:
            _, h = self.gru(pack_padded_sequence(inputs, n, batch_first=True, enforce_sorted=False))
        mean, logvar = self.out(h[0]).chunk(2, dim=-1)  # (B, L) each
        return mean, logvar


class DecayGRUEncoder(GRUEncoder):
    """GRU over processing-ordered [x̂, m, δ, Δt] (GRU-D's inputs, Che et al. 2018): per channel, δ is the
    time since its last observation and an unobserved value x̂ decays from that observation towards the
    training mean (0 in normalised units) at a learned per-channel rate, x̂ = exp(-relu(w δ + b)) x_last."""

    inputs_per_channel = 3

    def __init__(self, cfg: ModelConfig, n_channels: int, n_extra: int = 0):
        super().__init__(cfg, n_channels, n_extra)
        self.w = nn.Parameter(torch.full((n_channels,), 0.5))
        self.b = nn.Parameter(torch.zeros(n_channels))

    def inputs(self, xp: torch.Tensor, mp: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """→ (B, T, 3D + 1)."""
        b, tmax, d = xp.shape
        tau = dt[..., 0].cumsum(1)[..., None].expand(b, tmax, d)  # (B, T, D) time read so far
        j = torch.arange(tmax, device=xp.device)[None, :, None].expand(b, tmax, d)
        last = torch.where(mp > 0, j, -1).cummax(dim=1).values  # (B, T, D) index of the last observation
        seen = last >= 0
        idx = last.clamp(min=0)
        delta = torch.where(seen, tau - tau.gather(1, idx), tau)  # (B, T, D)
        decay = torch.exp(-torch.relu(self.w * delta + self.b))
        x_hat = torch.where(mp > 0, xp, decay * xp.gather(1, idx) * seen)
        return torch.cat([x_hat, mp, delta, dt], dim=-1)


class ContinuousEncoder(nn.Module):
    """A state h (B, H) that evolves between points (`evolve`) and takes each point in (`update`), in
    processing order; the final state → (mean, log-variance) of z0. Subclasses set `anchor`, `hidden`,
    `out` and the two steps."""

    anchor: str
    hidden: int
    out: nn.Linear

    def evolve(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """h (B, H) after time dt (B, 1)."""
        raise NotImplementedError

    def update(self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """h (B, H) after the point with values x · m and mask m (B, D) (and any extra inputs after x)."""
        raise NotImplementedError

    def forward(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        m: torch.Tensor,
        lengths: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xp, mp, dt = processing_order(t, x, m, lengths, self.anchor)
        if extra is not None:
            xp = torch.cat([xp, reorder(extra, lengths, self.anchor)], dim=-1)
        b, tmax, _ = xp.shape
        h = xp.new_zeros(b, self.hidden)
        for j in range(tmax):
            if j % POLL_EVERY == 0:  # a long series is thousands of steps: stop if nobody waits any more
                poll()
            valid = (j < lengths)[:, None]  # (B, 1)
            if j > 0:
                h = torch.where(valid, self.evolve(h, dt[:, j]), h)
            h = torch.where(valid, self.update(h, xp[:, j], mp[:, j]), h)
        mean, logvar = self.out(h).chunk(2, dim=-1)
        return mean, logvar


class ODERNNEncoder(ContinuousEncoder):
    """ODE-RNN: between points h follows dh/dt = g(h) for Δt (fixed-step RK4, `encoder_substeps` steps per
    gap, so every series has its own Δt); at each point a GRU cell takes [x·m, m]. Final state → (mean,
    log-variance) of z0."""

    def __init__(self, cfg: ModelConfig, n_channels: int, n_extra: int = 0):
        super().__init__()
        self.anchor = cfg.anchor
        self.substeps = cfg.encoder_substeps
        self.g = mlp(cfg.encoder_hidden, cfg.encoder_ode_hidden, 1, cfg.encoder_hidden, "tanh")
        self.cell = nn.GRUCell(2 * n_channels + n_extra, cfg.encoder_hidden)
        self.out = nn.Linear(cfg.encoder_hidden, 2 * cfg.latent_dim)
        self.hidden = cfg.encoder_hidden

    def evolve(self, h: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """h (B, H), dt (B, 1) → h after time dt under g: `encoder_substeps` steps of the 3/8-rule RK4 on
        s ∈ [0, 1] with dh/ds = Δt g(h), the scheme of torchdiffeq's "rk4", written out to skip its per-call
        overhead (this runs once per observation)."""
        hs = dt / self.substeps  # (B, 1) step in model time
        for _ in range(self.substeps):
            k1 = self.g(h)
            k2 = self.g(torch.addcmul(h, hs, k1, value=1 / 3))
            k3 = self.g(torch.addcmul(h, hs, k2 - k1 / 3))
            k4 = self.g(torch.addcmul(h, hs, k1 - k2 + k3))
            h = torch.addcmul(h, hs, k1 + 3 * (k2 + k3) + k4, value=0.125)
        return h

    def update(self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.cell(torch.cat([x, m], dim=-1), h)


# model.encoder → its class: retiring an encoder is deleting its entry and its class
ENCODERS: dict[str, type[nn.Module]] = {"gru": GRUEncoder, "decay": DecayGRUEncoder, "odernn": ODERNNEncoder}


def make_encoder(cfg: ModelConfig, n_channels: int, n_extra: int = 0) -> nn.Module:
    return ENCODERS[cfg.encoder](cfg, n_channels, n_extra)
