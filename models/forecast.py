"""Forecaster: raw series in, raw forecasts out, at any query times, in batches.

Takes `Series` (times in absolute model time, raw values with NaN for missing) and, per series,
query times in the same absolute model time; returns per-series means, quantiles and optional
samples in raw units (or normalised units, for evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from models.checkpoint import ModelBundle
from models.config import SolverConfig
from models.data import Normalizer, Series, collate
from models.latent_ode import LatentODE, Prediction
from models.rnn_baseline import RNNBaseline
from models.solve import Status


@dataclasses.dataclass
class SeriesForecast:
    """One series' forecast. times (Q,) as asked; mean (Q, D); quantiles level → (Q, D);
    samples (S, Q, D) when asked; status 0 = ok, else a `models.solve.Status` code."""

    id: str
    times: np.ndarray
    mean: np.ndarray
    quantiles: dict[float, np.ndarray]
    samples: np.ndarray | None
    status: int


def raw_mean(normalizer: Normalizer, samples: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    """Predictive mean in raw units of the mixture Σ_s N(samples[s], std²) (normalised units).

    Linear channels: the inverse map of the mean. Log channels: the mean of each log-normal component,
    exp(m + sd·μ_s + (sd·σ)²/2), averaged over s: the mean of the data, not of its log.
    samples (S, …, D) → (…, D).
    """
    mean = torch.as_tensor(normalizer.mean, dtype=samples.dtype, device=samples.device)
    sd = torch.as_tensor(normalizer.std, dtype=samples.dtype, device=samples.device)
    lin = samples.mean(0) * sd + mean
    if not any(normalizer.log):
        return lin
    var = (sd * std) ** 2 if std is not None else torch.zeros_like(sd)
    logn = torch.exp((samples * sd + mean + 0.5 * var).clamp(max=80.0)).mean(0)
    logged = torch.as_tensor(normalizer.log, device=samples.device)
    return torch.where(logged, logn, lin)


class Forecaster:
    """Batches series through a model; holds no per-request state (safe to share between threads that
    do not run it concurrently)."""

    def __init__(
        self,
        model: LatentODE | RNNBaseline,
        normalizer: Normalizer,
        device: str | torch.device = "cpu",
        num_samples: int = 64,
        batch_size: int = 1024,
        solver: SolverConfig | None = None,
    ):
        self.model = model.to(device).eval()
        self.normalizer = normalizer
        self.device = torch.device(device)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.solver = solver or model.cfg.solver

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, device: str | torch.device = "cpu", **kwargs: object) -> Forecaster:
        return cls(bundle.model, bundle.normalizer, device, **kwargs)  # type: ignore[arg-type]

    def predict(
        self,
        series: Sequence[Series],
        query_times: Sequence[np.ndarray],
        levels: Sequence[float] = (),
        num_samples: int | None = None,
        return_samples: bool = False,
        n_context: Sequence[int] | None = None,
        normalized: bool = False,
    ) -> list[SeriesForecast]:
        """Forecast every series at its query times (absolute model time, any order, ≥ 1 per series).

        n_context: leading points of each series to condition on (default: all). With `normalized`, all
        outputs are in the model's normalised units (for evaluation metrics).
        """
        if len(query_times) != len(series):
            raise ValueError("need one array of query times per series")
        ns = self.num_samples if num_samples is None else num_samples
        out: list[SeriesForecast] = []
        for start in range(0, len(series), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            ctx = None if n_context is None else list(n_context[chunk])
            out += self._predict_chunk(series[chunk], query_times[chunk], levels, ns, return_samples, ctx, normalized)
        return out

    @torch.no_grad()
    def _predict_chunk(
        self,
        series: Sequence[Series],
        query_times: Sequence[np.ndarray],
        levels: Sequence[float],
        num_samples: int,
        return_samples: bool,
        n_context: list[int] | None,
        normalized: bool,
    ) -> list[SeriesForecast]:
        anchor = self.model.cfg.anchor
        n_context = n_context or [len(s) for s in series]
        batch = collate(series, self.normalizer, n_context, anchor).to(self.device)
        qmax = max(len(q) for q in query_times)
        if min(len(q) for q in query_times) == 0:
            raise ValueError("every series needs at least one query time")
        rel = np.empty((len(series), qmax))  # each row padded with its own last query (deduplicated later)
        for i, (q, a) in enumerate(zip(query_times, batch.anchor.tolist(), strict=True)):
            n = len(q)
            rel[i, :n] = q
            rel[i, :n] -= a
            rel[i, n:] = rel[i, n - 1]
        query = torch.as_tensor(rel, dtype=torch.float32, device=self.device)
        need_samples = return_samples or (not normalized and any(self.normalizer.log))
        pred: Prediction = self.model.predict(
            batch,
            query,
            num_samples=num_samples,
            levels=levels,
            return_samples=need_samples,
            solver=self.solver,
        )
        std = self.model.decoder.std
        if normalized:
            mean, quant, samples = pred.mean, pred.quantiles, pred.samples
        else:
            mean = (
                raw_mean(self.normalizer, pred.samples, std)
                if need_samples and pred.samples is not None
                else self.normalizer.inverse(pred.mean)
            )
            quant = self.normalizer.inverse(pred.quantiles)
            samples = self.normalizer.inverse(pred.samples) if pred.samples is not None else None
        mean_np, quant_np = mean.cpu().numpy(), quant.cpu().numpy()
        samples_np = samples.cpu().numpy() if (samples is not None and return_samples) else None
        status = pred.status.cpu().numpy()
        finite = np.isfinite(mean_np).all(axis=(1, 2)) & np.isfinite(quant_np).all(axis=(0, 2, 3))
        status = np.where((status == Status.OK) & ~finite, int(Status.NONFINITE), status).tolist()
        out = []
        for i, (s, q) in enumerate(zip(series, query_times, strict=True)):
            n = len(q)
            out.append(
                SeriesForecast(
                    id=s.id,
                    times=np.asarray(q),
                    mean=mean_np[i, :n],
                    quantiles={lv: quant_np[j, i, :n] for j, lv in enumerate(pred.levels)},
                    samples=samples_np[:, i, :n] if samples_np is not None else None,
                    status=int(status[i]),
                )
            )
        return out
