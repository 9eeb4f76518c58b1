"""Forecaster: raw series in, raw forecasts out, at any query times, in batches.

Takes `Series` (times in absolute model time, raw values with NaN for missing) and, per series,
query times in the same absolute model time; returns per-series means, quantiles and optional
samples in raw units (or normalised units, for evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.config import SolverConfig
from latentcast.models.data import Normalizer, Series
from latentcast.models.device import SMALL_ROWS, ThreadPolicy
from latentcast.models.interrupt import interruptible, poll
from latentcast.models.latent_ode import LatentODE, Prediction
from latentcast.models.packed import PackedForecast, PackedSeries
from latentcast.models.rnn_baseline import RNNBaseline
from latentcast.models.solve import EXEC_DEFAULTS, GraphCache, Status
from latentcast.models.validity import Validity


@dataclasses.dataclass
class SeriesForecast:
    """One series' forecast. times (Q,) as asked; point (Q, D) the point forecast (`PackedForecast`);
    mean (Q, D); quantiles level → (Q, D); samples (S, Q, D) when asked; status 0 = ok, else a
    `models.solve.Status` code."""

    id: str
    times: np.ndarray
    point: np.ndarray
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
    do not run it concurrently). It owns the model's CUDA graphs (`graphs`, used on a GPU).

    Inputs are read as the model declares (`validity`: missing-value markers and values outside the
    physical bounds become not observed), and answers (means, quantiles, samples) are clipped to the
    bounds. A series whose answer is not finite gets `Status.NONFINITE`. How far each series' answer
    lies from the training data is reported (`PackedForecast.far`); with `strict`, an answer further
    than `unusual_scales` (normalised units) gets `Status.OUT_OF_RANGE` instead of an answer.

    Series are solved in chunks of at most `batch_size` series whose padded solver output (samples ×
    series × query times × latent width) stays within `max_chunk_values`, so the memory a request
    takes does not grow with its size; results do not depend on the chunking. `spread` and
    `persistence`: the per-channel calibration fitted after training (models.training.calibrate).
    `small_rows`, `max_threads`: how many intra-op threads its CPU solves use (a `ThreadPolicy`, fixed
    here; `threads_for` says how many a solve takes).
    """

    def __init__(
        self,
        model: LatentODE | RNNBaseline,
        normalizer: Normalizer,
        device: str | torch.device = "cpu",
        num_samples: int = 64,
        batch_size: int = 1024,
        solver: SolverConfig | None = None,
        unusual_scales: float = 50.0,
        strict: bool = False,
        max_chunk_values: int = 1 << 24,
        spread: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
        validity: Validity | None = None,
        small_rows: int | None = None,
        max_threads: int | None = None,
        persistence: Sequence[float] | None = None,
    ):
        self.model = model.to(device, dtype).eval()
        # how many intra-op threads a CPU solve uses: one up to small_rows rows, at most max_threads
        self.threads = ThreadPolicy(SMALL_ROWS if small_rows is None else small_rows, max_threads)
        self.dtype = dtype  # float64: a reference solve, for measuring the error of float32 ones
        self.normalizer = normalizer
        self.device = torch.device(device)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.solver = solver or model.cfg.solver
        self.unusual_scales = unusual_scales
        self.strict = strict
        self.validity = validity if validity is not None else Validity.none(normalizer.channels)
        self.max_chunk_values = max_chunk_values
        self.spread = tuple(spread) if spread is not None and any(c != 1.0 for c in spread) else None
        self.persistence = tuple(persistence) if persistence is not None and any(persistence) else None
        self.graphs = GraphCache(EXEC_DEFAULTS["cuda"]["graph_cache"])

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, device: str | torch.device = "cpu", **kwargs: object) -> Forecaster:
        """The bundle's model, normalisation, calibration, bounds and markers."""
        return cls(
            bundle.model,
            bundle.normalizer,
            device,
            spread=bundle.calibration,
            persistence=bundle.persistence,
            validity=bundle.limits,
            **kwargs,  # type: ignore[arg-type]
        )

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
        packed = PackedSeries.from_series(series, query_times, n_context)
        out = self.predict_packed(packed, levels, num_samples, return_samples, normalized)
        return per_series(out)

    def predict_packed(
        self,
        packed: PackedSeries,
        levels: Sequence[float] = (),
        num_samples: int | None = None,
        return_samples: bool | int = False,
        normalized: bool = False,
        deadlines: np.ndarray | None = None,
        solver: SolverConfig | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> PackedForecast:
        """`predict` for a packed batch, results flat over its query times (the service's path).

        num_samples: latent samples behind the mean and quantiles (default: the forecaster's).
        return_samples: also return sampled trajectories: True for as many, or how many (more samples
        are solved then, but the mean and quantiles still use the first `num_samples`). deadlines:
        (B,) `time.monotonic()` times past which a series' solve stops (`Status.DEADLINE`). solver: this
        call's solver settings (default: the forecaster's), e.g. a client's tolerance. wanted: polled
        between the solver's steps; once it returns False the call stops part-way with `Interrupted`.
        """
        ns = self.num_samples if num_samples is None else num_samples
        n_out = ns if return_samples is True else int(return_samples)
        if len(packed) == 0:
            raise ValueError("nothing to forecast: zero series")
        if self.validity.bounded or self.validity.has_markers:  # as `models.guard.pack` reads them
            packed = packed.with_values(self.validity.clean(packed.values)[0])
        if wanted is not None:
            with interruptible(wanted):
                return self._predict_chunks(packed, levels, ns, n_out, normalized, deadlines, solver or self.solver)
        return self._predict_chunks(packed, levels, ns, n_out, normalized, deadlines, solver or self.solver)

    def _predict_chunks(
        self,
        packed: PackedSeries,
        levels: Sequence[float],
        ns: int,
        n_out: int,
        normalized: bool,
        deadlines: np.ndarray | None,
        solver: SolverConfig,
    ) -> PackedForecast:
        parts = []
        for start, stop in self._chunks(packed, max(ns, n_out)):
            poll()
            due = deadlines[start:stop] if deadlines is not None else None
            chunk = packed.take(start, stop)
            parts.append(self._predict_chunk(chunk, levels, ns, n_out, normalized, due, solver))
        return PackedForecast.concat(parts)

    def threads_for(self, series: int, num_samples: int | None = None) -> int:
        """The intra-op threads a solve of `series` series with `num_samples` latent samples (default:
        the forecaster's) would use now."""
        rows = series * max(self.num_samples if num_samples is None else num_samples, 1)
        return self.threads.threads(rows, self.device)

    def counters(self) -> tuple[int, int]:
        """(vector-field evaluations, CUDA graphs captured) so far: a scheduler reads their growth."""
        dynamics = getattr(self.model, "dynamics", None)
        return (int(dynamics.nfe) if dynamics is not None else 0), int(self.graphs.captures)

    def _spread(self) -> torch.Tensor | None:
        """(D,) calibration factors on the model's device and dtype, or None when uncalibrated."""
        if self.spread is None:
            return None
        return torch.as_tensor(self.spread, dtype=self.dtype, device=self.device)

    def _persistence(self) -> torch.Tensor | None:
        """(D,) time scales of the pull toward each channel's last value (model time), or None when off."""
        if self.persistence is None:
            return None
        return torch.as_tensor(self.persistence, dtype=self.dtype, device=self.device)

    def _chunks(self, packed: PackedSeries, samples: int) -> list[tuple[int, int]]:
        """Consecutive series ranges: ≤ batch_size series, padded solver output ≤ max_chunk_values."""
        cfg = self.model.cfg
        state = getattr(cfg, "latent_dim", 1) + int(getattr(self.model, "n_const", 0))  # the ODE's state width
        width = max(state, len(self.normalizer.channels)) * max(samples, 1)
        n_q = np.diff(packed.query_offsets)
        if len(packed) <= self.batch_size and len(packed) * (int(n_q.max()) + 8) * width <= self.max_chunk_values:
            return [(0, len(packed))]  # the common case: one chunk
        out, start = [], 0
        while start < len(packed):
            stop, widest = start, 0
            while stop < len(packed) and stop - start < self.batch_size:
                widest_next = max(widest, int(n_q[stop]) + 8)  # + the solver's query window
                if stop > start and (stop + 1 - start) * widest_next * width > self.max_chunk_values:
                    break
                widest, stop = widest_next, stop + 1
            out.append((start, stop))
            start = stop
        return out

    @torch.inference_mode()
    def _predict_chunk(
        self,
        packed: PackedSeries,
        levels: Sequence[float],
        num_samples: int,
        n_out: int,
        normalized: bool,
        deadlines: np.ndarray | None,
        solver: SolverConfig,
    ) -> PackedForecast:
        batch = packed.context_batch(self.normalizer, self.model.cfg.anchor, getattr(self.model, "inputs", None))
        rel, row, col = packed.padded_queries(batch.anchor.numpy())
        batch = batch.to(self.device, self.dtype)
        query = torch.as_tensor(rel, dtype=self.dtype, device=self.device)
        # (B, Qmax, …) → flat (M, …) on the device: padding never crosses to the host (indices copied
        # before the model's kernels are queued, so the copy does not wait for them)
        r = torch.as_tensor(row, device=self.device)
        c = torch.as_tensor(col, device=self.device)
        logged = not normalized and any(self.normalizer.log)
        need_samples = n_out > 0 or logged
        # the point forecast of a logged channel is the predictive median: solved beside the levels asked
        solve_levels = (*levels, 0.5) if logged and 0.5 not in levels else tuple(levels)
        pred: Prediction = self.model.predict(
            batch,
            query,
            num_samples=max(num_samples, n_out),
            levels=solve_levels,
            return_samples=need_samples,
            solver=solver,
            graphs=self.graphs if self.device.type == "cuda" else None,
            stats_samples=num_samples,
            deadline=torch.as_tensor(deadlines, dtype=torch.float64) if deadlines is not None else None,
            spread=self._spread(),
            threads=self.threads,
            persistence=self._persistence(),
        )
        std = self.model.decoder.std
        # behind the mean and quantiles (0 samples: the posterior mean alone)
        stats = pred.samples[: num_samples or None] if pred.samples is not None else None
        if normalized:
            mean, quant, samples = pred.mean, pred.quantiles, pred.samples
            point = mean
        else:
            mean = (
                raw_mean(self.normalizer, stats, std)
                if need_samples and stats is not None
                else self.normalizer.inverse(pred.mean)
            )
            clip = self.validity.clip
            mean, quant = clip(mean), clip(self.normalizer.inverse(pred.quantiles))
            samples = clip(self.normalizer.inverse(pred.samples)) if pred.samples is not None else None
            point = mean
            if logged:
                log = torch.as_tensor(self.normalizer.log, device=mean.device)
                point = torch.where(log, quant[solve_levels.index(0.5)], mean)
            quant = quant[: len(levels)]
        # (M, D) how far the answer lies from the training data, normalised: the mean as answered, the
        # quantiles and any samples returned
        z_mean = pred.mean if normalized else self.normalizer.forward(mean)
        z = z_mean[r, c].abs()
        if pred.quantiles.shape[0]:
            z = torch.maximum(z, pred.quantiles[:, r, c].abs().amax(0))
        if pred.samples is not None and n_out:
            z = torch.maximum(z, pred.samples[:n_out, r, c].abs().amax(0))
        mean_np = mean[r, c].cpu().numpy()
        point_np = point[r, c].cpu().numpy() if point is not mean else mean_np
        quant_np = quant[:, r, c].cpu().numpy()
        samples_np = samples[:n_out, r, c].cpu().numpy() if (samples is not None and n_out) else None
        status = pred.status.cpu().numpy()
        finite_q = np.isfinite(mean_np).all(axis=1) & np.isfinite(quant_np).all(axis=(0, 2))  # (M,)
        finite_q &= np.isfinite(point_np).all(axis=1)
        if samples_np is not None:
            finite_q &= np.isfinite(samples_np).all(axis=(0, 2))
        starts = packed.query_offsets[:-1]
        finite = np.logical_and.reduceat(finite_q, starts)
        far, far_channel = _furthest(z.nan_to_num(nan=np.inf).cpu().numpy(), packed.query_offsets)
        status = np.where((status == Status.OK) & ~finite, int(Status.NONFINITE), status)
        if self.strict:
            status = np.where((status == Status.OK) & (far > self.unusual_scales), int(Status.OUT_OF_RANGE), status)
        return PackedForecast(
            ids=packed.ids,
            query_offsets=packed.query_offsets,
            times=packed.queries,
            point=point_np,
            mean=mean_np,
            quantiles=quant_np,
            levels=tuple(levels),
            samples=samples_np,
            status=status,
            nfe=pred.evals.cpu().numpy() if pred.evals is not None else np.zeros(len(packed)),
            far=far,
            far_channel=far_channel,
        )


def _furthest(z: np.ndarray, query_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z (M, D) → per series (B,) the largest value over its queries and channels, and that channel."""
    per_query, channel = z.max(axis=1), z.argmax(axis=1)  # (M,)
    starts = query_offsets[:-1]
    far = np.maximum.reduceat(per_query, starts)
    at = np.where(per_query == np.repeat(far, np.diff(query_offsets)), np.arange(len(per_query)), len(per_query))
    return far.astype(np.float64), channel[np.minimum.reduceat(at, starts)]


def per_series(fc: PackedForecast) -> list[SeriesForecast]:
    """One `SeriesForecast` per series (views into the flat arrays)."""
    q = fc.query_offsets.tolist()
    return [
        SeriesForecast(
            id=sid,
            times=fc.times[a:z],
            point=fc.point[a:z],
            mean=fc.mean[a:z],
            quantiles={lv: fc.quantiles[j, a:z] for j, lv in enumerate(fc.levels)},
            samples=fc.samples[:, a:z] if fc.samples is not None else None,
            status=int(st),
        )
        for sid, a, z, st in zip(fc.ids, q[:-1], q[1:], fc.status.tolist(), strict=True)
    ]
