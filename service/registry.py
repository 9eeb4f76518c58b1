"""The served models: loaded once from checkpoints, placed on the device, warmed up."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from latentcast.models import (
    Forecaster,
    Limits,
    ModelBundle,
    PackedSeries,
    Series,
    resolve_device,
)
from latentcast.service.config import Settings
from latentcast.service.cost import CostModel
from latentcast.service.schemas import ModelInfo
from latentcast.service.validate import ModelSpec

log = logging.getLogger("latentcast.service")


@dataclasses.dataclass
class ServedModel:
    bundle: ModelBundle
    forecaster: Forecaster
    spec: ModelSpec
    express: Forecaster | None = None  # a copy for the express lane: forecasters are not shared by threads

    @property
    def name(self) -> str:
        return self.bundle.name

    def info(self, default: bool) -> ModelInfo:
        b = self.bundle
        scale = b.time.scale
        # not the ids it was fitted on (its users' identifiers, and thousands of them), and its longest
        # training span in the unit clients use
        data = {k: v for k, v in b.data.items() if k not in ("config", "fitted_ids", "max_span")}
        if "max_span" in b.data:
            data["max_span_in_time_unit"] = float(b.data["max_span"]) / scale
        return ModelInfo(
            name=b.name,
            version=b.version,
            channels=list(b.channels),
            log_channels=[c for c, lg in zip(b.channels, b.normalizer.log, strict=True) if lg],
            time_unit=b.time.unit,
            time_scale=scale,
            max_horizon=self.spec.limits.max_horizon / scale,
            events=list(b.inputs.events),
            static=list(b.inputs.static),
            inputs=b.inputs.describe() if b.inputs else None,
            **_validity(b),
            training_data=data,
            metrics=b.metrics,
            default=default,
        )


def _validity(bundle: ModelBundle) -> dict[str, Any]:
    shown = bundle.limits.describe()
    return {"bounds": shown["bounds"], "missing_values": shown["missing_values"], "bounds_source": shown["source"]}


def choose_device(setting: str) -> torch.device:
    """`latentcast.models.resolve_device`, its error naming this setting."""
    try:
        return resolve_device(setting)
    except ValueError as exc:
        raise RuntimeError(f"LATENTCAST_DEVICE: {exc}") from None


def load_models(settings: Settings, device: torch.device) -> dict[str, ServedModel]:
    served: dict[str, ServedModel] = {}
    for path in settings.model_paths:
        bundle = ModelBundle.load(path, device)
        if bundle.name in served:
            raise RuntimeError(f"two checkpoints are named {bundle.name!r} ({path}); serve one of them")
        horizon = bundle.max_horizon(settings.max_horizon_factor)
        limits = Limits(
            bundle.time,
            horizon,
            bundle.normalizer,
            bundle.limits,
            settings.unusual_value_scales,
            settings.warnings_as_errors,
            bundle.entry_error_scales,
        )
        spec = ModelSpec(
            bundle.name, bundle.version, tuple(bundle.channels), limits, bundle.config.solver, bundle.inputs
        )
        options: dict[str, Any] = dict(
            num_samples=settings.num_samples,
            batch_size=settings.max_batch_series,
            unusual_scales=settings.unusual_output_scales,
            strict=settings.warnings_as_errors,
            max_chunk_values=settings.max_solve_values,
        )
        # the thread policy, set once here: the main lane uses torch's threads as set at start-up, the
        # express lane's small solves one (a second set of OpenMP workers puts the main lane's to sleep)
        small = settings.cpu_small_batch_rows
        forecaster = Forecaster.from_bundle(
            bundle, device, small_rows=small, max_threads=torch.get_num_threads(), **options
        )
        express = None
        if settings.express_seconds > 0:  # its own copy of the weights and buffers
            express = Forecaster.from_bundle(
                dataclasses.replace(bundle, model=copy.deepcopy(bundle.model)),
                device,
                small_rows=small,
                max_threads=1,
                **options,
            )
        served[bundle.name] = ServedModel(bundle, forecaster, spec, express)
        log.info("loaded model %s version %s from %s on %s", bundle.name, bundle.version, path, device)
    return served


def default_model_name(settings: Settings, served: dict[str, ServedModel]) -> str:
    if settings.default_model is not None:
        if settings.default_model not in served:
            raise RuntimeError(
                f"LATENTCAST_DEFAULT_MODEL={settings.default_model!r} is not served (served: {sorted(served)})"
            )
        return settings.default_model
    return "pbcseq" if "pbcseq" in served else next(iter(served))


def warm_up(model: ServedModel, sizes: tuple[int, ...] | None = None) -> None:
    """Run the whole forecast path once per batch size (series) and query count, so lazy initialisation
    happens before traffic. On a GPU that includes capturing the solver's CUDA graphs for the padded
    shapes of batches up to 64 series with up to 8 or 64 query times (forward only, or also backward)."""
    d = len(model.bundle.channels)
    gpu = model.forecaster.device.type == "cuda"
    if sizes is None:
        sizes = (1, 2, 4, 8, 16, 32, 64) if gpu else (1, 16)
    query_sets = [np.array([-0.1, 0.2, 0.5]), np.linspace(0.05, 1.0, 50)] if gpu else [np.array([-0.1, 0.2, 0.5])]
    for fc in (model.forecaster, model.express):
        if fc is None:
            continue
        for n in sizes:
            series = [
                Series(id=f"warm{i}", times=np.array([0.0, 0.1, 0.3]), values=np.ones((3, d), dtype=np.float32))
                for i in range(n)
            ]
            for q in query_sets:
                fc.predict(series, [q] * n, levels=(0.1, 0.5, 0.9))


LONG_SERIES = 256  # observations per series in the calibration solves that vary them


def calibrate(model: ServedModel, costs: CostModel, num_samples: int) -> None:
    """Measure the cost model's coefficients (`service.cost`) at the model's own tolerance, after
    warm-up: five solves that vary the series, the observations (4 or LONG_SERIES, with few and with
    many series) and the query times one at a time, the fastest of three runs each, and the fit through
    them (no coefficient below 0). Series as long as LONG_SERIES make the per-observation cost stand out
    of the timing noise: at 64 it could fit to 0, and a series of 10,000 observations was admitted as
    cheap."""
    d = len(model.bundle.channels)
    fc = model.forecaster
    rows, seconds, nfes = [], [], []
    # the per-row costs from solves past the one-thread rule for small ones, as large requests run
    mid = max(32, -(-2 * fc.threads.small_rows // max(num_samples, 1)))
    long = LONG_SERIES
    for n, t, q in ((4, 4, 4), (max(128, mid), 4, 4), (mid, long, 4), (4, long, 4), (mid, 4, 64)):
        times = np.linspace(0.0, 0.6, t)
        packed = PackedSeries.from_series(
            [Series(id=f"c{i}", times=times, values=np.ones((t, d), dtype=np.float32)) for i in range(n)],
            [np.linspace(-0.1, 0.9, q)] * n,
        )
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            out = fc.predict_packed(packed, levels=(0.1, 0.5, 0.9))
            best = min(best, time.perf_counter() - t0)
        nfe = float(out.nfe.mean())
        r = n * max(num_samples, 1)
        rows.append([1.0, t, r * nfe, r * t, r * q])
        seconds.append(best)
        nfes.append(nfe)
    coef = _nonnegative_fit(np.array(rows), np.array(seconds))
    event, control = _event_cost(model, num_samples)
    costs.seed(model.name, fc.solver, float(coef[0]), float(coef[1]), coef[2:], nfes[0], event, control)
    log.info("model %s: cost %s", model.name, {k: float(f"{v:.3g}") for k, v in costs.describe(model.name).items()})


EVENTS = 1024  # events per series in the solve that times them


def _event_cost(model: ServedModel, num_samples: int) -> tuple[float, bool]:
    """For a model with events: seconds per event and time its compartments are summed at (`service.cost`),
    from the fastest of three solves of 4 series with and without EVENTS events each; and whether its
    levels drive the vector field (events then cost at every evaluation of every sample)."""
    spec, cfg = model.bundle.inputs, model.bundle.config
    if not spec.events:
        return 0.0, False
    control = bool(spec.levels) and getattr(cfg, "input_dynamics", "none") != "none"
    d, e, fc = len(model.bundle.channels), len(spec.events), model.forecaster
    times, queries = np.linspace(0.0, 0.6, 4), [np.linspace(-0.1, 0.9, 64)] * 4
    best, nfe = [], 0.0
    for k in (0, EVENTS):
        inputs = spec.held(np.linspace(-0.5, 0.9, k), np.ones((k, e)), np.full(len(spec.static), np.nan))
        series = [Series(id=f"e{i}", times=times, values=np.ones((4, d), np.float32), inputs=inputs) for i in range(4)]
        packed = PackedSeries.from_series(series, queries)
        fastest = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            out = fc.predict_packed(packed, levels=(0.1, 0.5, 0.9))
            fastest = min(fastest, time.perf_counter() - t0)
        best.append(fastest)
        nfe = float(out.nfe.mean())
    per_series = len(times) + len(queries[0]) + (max(num_samples, 1) * nfe if control else 0.0)
    return max(best[1] - best[0], 0.0) / (4 * EVENTS * per_series), control


def _nonnegative_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares x @ c ≈ y with c ≥ 0: coefficients that come out negative are dropped and the rest
    refitted."""
    keep = np.ones(x.shape[1], dtype=bool)
    coef = np.zeros(x.shape[1])
    for _ in range(x.shape[1]):
        sol, *_ = np.linalg.lstsq(x[:, keep], y, rcond=None)
        if (sol >= 0).all():
            coef[keep] = sol
            return coef
        keep[np.flatnonzero(keep)[sol < 0]] = False
    return coef


def load_and_warm(settings: Settings, device: torch.device) -> dict[str, ServedModel]:
    models = load_models(settings, device)
    for served in models.values():
        warm_up(served)
    return models


def measure(models: dict[str, ServedModel], num_samples: int) -> CostModel:
    """The cost model's coefficients of every served model (on a quiet process: they are timings)."""
    costs = CostModel()
    for served in models.values():
        calibrate(served, costs, num_samples)
    return costs
