"""The latent ODE (Chen et al. 2018 §5; Rubanova et al. 2019): encoder → z0 → ODE → decoder.

Everything here works in normalised units on padded `Batch`es; `models.forecast` maps raw data in
and out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from latentcast.models.config import ModelConfig, SolverConfig
from latentcast.models.data import Batch
from latentcast.models.decoder import Decoder, gaussian_log_density
from latentcast.models.device import ThreadPolicy, intra_op_threads
from latentcast.models.dynamics import Dynamics
from latentcast.models.encoder import make_encoder
from latentcast.models.inputs import InputEffect, InputSpec
from latentcast.models.quantiles import mixture_quantiles, standard_normal_draws
from latentcast.models.solve import GraphCache, odeint_grid, solve_per_series


@dataclasses.dataclass
class Prediction:
    """Normalised units. mean (B, Q, D); quantiles (len(levels), B, Q, D); samples (S, B, Q, D) when
    asked; status (B,) solver status per series (0 = ok); nfe batched vector-field evaluations; evals (B,)
    vector-field evaluations one of the series' trajectories needed (mean over its samples)."""

    mean: torch.Tensor
    quantiles: torch.Tensor
    levels: tuple[float, ...]
    samples: torch.Tensor | None
    status: torch.Tensor
    nfe: int
    evals: torch.Tensor | None = None


@dataclasses.dataclass
class LossStats:
    loss: float
    kl: float
    mse: float
    nfe: int


def gather_times(batch: Batch, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Union of the batch's target times (U,) where `mask` (B, Tt, D) (default: observed) has a value, and
    per target position its index in it (B, Tt)."""
    valid = (batch.tgt_m if mask is None else mask).any(-1)  # (B, Tt)
    if not bool(valid.any()):  # nothing to score: solve to t = 0 only
        return batch.tgt_t.new_zeros(1), torch.zeros_like(batch.tgt_t, dtype=torch.long)
    t_union, inverse = torch.unique(batch.tgt_t[valid], sorted=True, return_inverse=True)
    idx = torch.zeros_like(batch.tgt_t, dtype=torch.long)
    idx[valid] = inverse
    return t_union, idx


_CONTROL_LOCK = threading.Lock()  # one controlled solve at a time: the control lives on the dynamics module


class LatentODE(nn.Module):
    """`inputs`: the events and static covariates the model takes (`models.inputs`; none by default):
    their compartments join the decoder's output and, with the statics, the encoder's inputs."""

    def __init__(self, cfg: ModelConfig, n_channels: int, inputs: InputSpec | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_channels = n_channels
        self.inputs = inputs or InputSpec()
        if any(i >= n_channels for i in cfg.static_channels):
            raise ValueError(f"model.static_channels {list(cfg.static_channels)}: the data has {n_channels} channels")
        own = cfg.latent_dim if cfg.input_gains == "series" else 0
        self.effect = InputEffect(self.inputs, n_channels, cfg.input_rates, own) if self.inputs else None
        n_extra = self.effect.n_features + self.effect.n_static if self.effect is not None else 0
        self.encoder = make_encoder(cfg, n_channels, n_extra)
        own = len(self.inputs.static) if cfg.static_inputs == "dynamics" else 0
        self.n_const = len(cfg.static_channels) + own  # constant inputs of the vector field
        n_control = self.effect.n_control if self.effect is not None and cfg.input_dynamics == "levels" else 0
        self.dynamics = Dynamics(cfg, self.n_const, n_control)
        self.decoder = Decoder(cfg, n_channels)

    def input_effect(self, batch: Batch, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor | None:
        """What the batch's inputs add to the decoded channels at times t (B, T): (B, T, D), or None for a
        model without inputs (with a residual decoder and model.input_effect "change", the change since each
        channel's last observation); `state` (B, L) the posterior mean (model.input_gains "series"). A batch
        without inputs, for a model with them, is a ValueError."""
        if self.effect is None:
            return None
        if batch.inputs is None:
            raise ValueError("this model takes inputs (events/static); the batch carries none")
        effect = self.effect(t, batch.inputs, state)
        if self.cfg.residual == "none" or self.cfg.input_effect == "level":
            return effect
        # a residual decoder forecasts changes from each channel's last value: the inputs' change since then
        at_last = self.effect(batch.last_times(), batch.inputs, state).diagonal(dim1=1, dim2=2)  # (B, D)
        seen = batch.ctx_m.amax(dim=1)  # (B, D)
        return effect - (at_last * seen)[:, None, :]

    @contextlib.contextmanager
    def controlled(self, batch: Batch, rows: torch.Tensor) -> Iterator[Callable[[torch.Tensor], None]]:
        """Within it (and after it, until the next, for an adjoint's backward solve), the dynamics read this
        batch's inputs (model.input_dynamics); `rows` (R,) is each solver row's series. It yields
        `select(src)`: the solver's rows became rows[src] (backward rows)."""
        if not self.dynamics.n_control:
            yield lambda src: None
            return
        if self.effect is None or batch.inputs is None:
            raise ValueError("this model takes inputs (events/static); the batch carries none")
        effect, inputs, now = self.effect, batch.inputs, {"rows": rows}

        def control(t: torch.Tensor, n: int) -> torch.Tensor:
            return effect.control(t, inputs, now["rows"][:n])

        def select(src: torch.Tensor) -> None:
            now["rows"] = rows[src]

        with _CONTROL_LOCK:  # the control stays set after it: the adjoint's backward pass solves again
            self.dynamics.control = control
            yield select

    def with_static(self, z0: torch.Tensor, last: torch.Tensor, batch: Batch) -> torch.Tensor:
        """z0 (…, B, L) → the ODE's initial state (…, B, L + S): the static channels' last context values
        (`last` (B, D), batch.last_observed(): normalised, 0 where unseen; cfg.static_channels), then the
        batch's standardised static covariates where they enter the dynamics, appended."""
        if not self.n_const:
            return z0
        parts = [last[:, list(self.cfg.static_channels)]]  # (B, S1)
        if self.n_const > len(self.cfg.static_channels):
            if batch.inputs is None:
                raise ValueError("this model takes inputs (events/static); the batch carries none")
            parts.append(batch.inputs.static.to(last))  # (B, S2)
        s = torch.cat(parts, dim=-1)
        return torch.cat([z0, s.expand(*z0.shape[:-1], -1)], dim=-1)

    @torch.inference_mode(False)  # the module it keeps holds ordinary tensors, even when made in predict
    @torch.no_grad()
    def readout(self) -> nn.Linear | None:
        """A linear decoder as a map of the whole ODE state (L + S → D, zero weights on the static inputs),
        or None when the decoder is not linear. With static channels it is one module kept beside the model
        (not in its state dict) and refreshed in place on every call, so cached CUDA graphs keep reading it."""
        net = self.decoder.net
        if not isinstance(net, nn.Linear):
            return None
        n_static = self.n_const
        if not n_static:
            return net
        held = self.__dict__.get("_readout")
        if held is None or held.weight.device != net.weight.device or held.weight.dtype != net.weight.dtype:
            held = nn.Linear(net.in_features + n_static, net.out_features).to(net.weight)
            self.__dict__["_readout"] = held  # outside _modules: not a parameter, not saved
        held.weight.zero_()
        held.weight[:, : net.in_features].copy_(net.weight)
        held.bias.copy_(net.bias)
        return held

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z0 | context): mean and log-variance, (B, L) each."""
        extra = None
        if self.effect is not None:
            if batch.inputs is None:
                raise ValueError("this model takes inputs (events/static); the batch carries none")
            extra = self.effect.encoder_inputs(batch.ctx_t, batch.inputs)  # (B, Tc, X)
        mean, logvar = self.encoder(batch.ctx_t, batch.ctx_x, batch.ctx_m, batch.ctx_len, extra)
        return mean, logvar.clamp(-20.0, 10.0)

    def loss(
        self,
        batch: Batch,
        kl_weight: float = 1.0,
        iwae_samples: int = 1,
        forecast_only: bool = False,
        max_times: int = 0,
        channel_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LossStats]:
        """Negative ELBO (IWAE bound when iwae_samples > 1) per scored target value.

        The likelihood covers every observed value of the series (context reconstruction and the
        forecast window), or with `forecast_only` only the values after the context; the KL to N(0, I)
        is analytic for K = 1. `max_times` > 0: when the batch's targets fall on more distinct times
        than that, only a random subset of that many times is scored (an unbiased estimate of the
        per-value likelihood, at a fraction of the solver's output times). `channel_weight` (D,) scales
        each channel's log-likelihood terms (train.channel_balance).
        """
        k, b, lat = iwae_samples, batch.size, self.cfg.latent_dim
        mean, logvar = self.encode(batch)
        std = (0.5 * logvar).exp()
        eps = torch.randn(k, b, lat, device=mean.device, dtype=mean.dtype)
        z0 = mean + std * eps  # (K, B, L)
        mask = batch.likelihood_mask(forecast_only)
        t_union, idx = gather_times(batch, mask)
        n_all = mask.sum().clamp(min=1)
        if 0 < max_times < len(t_union):
            keep = torch.zeros(len(t_union), dtype=torch.bool, device=t_union.device)
            keep[torch.randperm(len(t_union), device=t_union.device)[:max_times]] = True
            mask = mask * keep[idx][..., None]  # (B, Tt, D): targets at the kept times only
            t_union, idx = gather_times(batch, mask)
        nfe0 = self.dynamics.nfe
        last = batch.last_observed()  # (B, D)
        state0 = self.with_static(z0, last, batch).reshape(k * b, -1)  # (KB, L + S)
        with self.controlled(batch, torch.arange(k * b, device=state0.device) % b):
            zs = odeint_grid(self.dynamics, state0, t_union, self.cfg.solver)[..., :lat]  # (KB, U, L)
        z_t = zs.gather(1, idx.repeat(k, 1)[..., None].expand(-1, -1, lat))  # (KB, Tt, L)
        x_hat = self.decoder(z_t).view(k, b, *batch.tgt_x.shape[1:])  # (K, B, Tt, D)
        effect = self.input_effect(batch, batch.tgt_t, mean)
        if effect is not None:
            x_hat = x_hat + effect
        if self.cfg.residual != "none":  # changes from each channel's last observed value (0 where none)
            x_hat = x_hat + last[None, :, None, :]
        weighted = mask if channel_weight is None else mask * channel_weight
        loglik = gaussian_log_density(batch.tgt_x, x_hat, self.decoder.std, weighted)  # (K, B)
        n_obs = mask.sum().clamp(min=1)
        loglik = loglik * (
            n_all / n_obs
        )  # scored on a subset of times: scaled to the whole, so the KL keeps its weight
        if k == 1:
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)  # (B,)
            bound = loglik[0] - kl_weight * kl
        else:
            log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)  # (K, B)
            log_p = (-0.5 * z0.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
            bound = torch.logsumexp(loglik + kl_weight * (log_p - log_q), dim=0) - math.log(k)
            kl = (log_q - log_p).mean(0)
        loss = -bound.sum() / n_all
        with torch.no_grad():
            mse = float((((x_hat.mean(0) - batch.tgt_x) ** 2) * mask).sum() / n_obs)
        return loss, LossStats(float(loss.detach()), float(kl.detach().mean()), mse, self.dynamics.nfe - nfe0)

    @torch.inference_mode()
    def predict(
        self,
        batch: Batch,
        query_t: torch.Tensor,
        num_samples: int = 32,
        levels: Sequence[float] = (),
        include_noise: bool = True,
        return_samples: bool = False,
        solver: SolverConfig | None = None,
        graphs: GraphCache | None = None,
        stats_samples: int | None = None,
        deadline: torch.Tensor | None = None,
        spread: torch.Tensor | None = None,
        threads: ThreadPolicy | None = None,
        persistence: torch.Tensor | None = None,
    ) -> Prediction:
        """Forecast each series at its own query times (`graphs`: where to keep CUDA graphs of the solve).

        query_t: (B, Q) times relative to each series' anchor, any order, before/between/after the
        context. z0 samples are mean + std · ε with fixed quasi-random ε shared by all series (0 samples:
        the posterior mean alone). The predictive distribution is the mixture of the decoded samples
        with the decoder's Gaussian noise (`include_noise`); `mean` is its mean. Mean and quantiles use
        the first `stats_samples` samples (default all): the draws are a sequence, so asking for more
        samples to look at does not change them. `deadline`: (B,) per-series `time.monotonic()` times
        past which a series' solve stops (`Status.DEADLINE`). `spread`: (D,) calibration factors on each
        channel's predictive spread about its mean (models.training.calibrate). `persistence`: (D,) per-channel time
        scales τ (model time, 0: off): the whole predictive distribution is shifted so that its mean is
        w · (the channel's last observed value) + (1 − w) · the model's, w = exp(−|t − t_last| / τ). On a
        CPU, `threads` (a `models.device.ThreadPolicy`) says how many intra-op threads the solve uses.
        """
        rows = batch.ctx_x.shape[0] * max(num_samples, 1)
        with intra_op_threads(rows, batch.ctx_x.device, threads):
            solver = solver or self.cfg.solver
            mean, logvar = self.encode(batch)
            b, lat = mean.shape
            q = query_t.shape[1]
            if num_samples > 0:
                eps = standard_normal_draws(num_samples, lat).to(mean)  # (S, L)
                z0 = mean + (0.5 * logvar).exp() * eps[:, None]  # (S, B, L)
            else:
                z0 = mean[None]
            s = z0.shape[0]
            # a linear decoder is applied inside the solve, before the dense output (D values per query, not L)
            linear = self.readout()
            last = batch.last_observed()  # (B, D)
            with self.controlled(batch, torch.arange(s * b, device=mean.device) % b) as select:
                sol = solve_per_series(
                    self.dynamics,
                    self.with_static(z0, last, batch).reshape(s * b, -1),
                    query_t.repeat(s, 1),
                    solver,
                    readout=linear,
                    cache=graphs if not self.dynamics.n_control else None,  # a graph would keep one batch's inputs
                    deadline=deadline.repeat(s) if deadline is not None else None,
                    on_rows=select,
                )
            x = sol.z if linear is not None else self.decoder(sol.z[..., :lat])  # (S·B, Q, D)
            x = x.view(s, b, q, self.n_channels)  # (S, B, Q, D)
            effect = self.input_effect(batch, query_t, mean)
            if effect is not None:
                x = x + effect
            if self.cfg.residual != "none":
                x = x + last[None, :, None, :]
            if persistence is not None:  # near a channel's last value, the forecast moves toward it
                hold = batch.hold_weight(query_t, persistence)  # (B, Q, D)
                x = x + hold * (last[:, None, :] - x[: stats_samples or s].mean(0))
            std = self.decoder.std if include_noise else None
            xs = x[: stats_samples or s]  # (S', B, Q, D) behind the mean and quantiles
            centre = xs.mean(0)
            if spread is not None:  # calibrated: every sample's deviation and the noise scaled per channel
                x = centre + spread * (x - centre)
                xs = x[: stats_samples or s]
                std = std * spread if std is not None else None
            quant = mixture_quantiles(xs, std, tuple(levels))
            return Prediction(
                mean=centre,
                quantiles=quant,
                levels=tuple(levels),
                samples=x if return_samples else None,
                status=sol.status.view(s, b).amax(0),
                nfe=sol.nfe,
                evals=sol.evals.view(s, b).double().mean(0),
            )
