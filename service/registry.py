"""The served models: loaded once from checkpoints, placed on the device, warmed up."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from latentcast.models import Forecaster, Limits, ModelBundle, PackedSeries, Series, load_checkpoint, resolve_device
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

    @property
    def name(self) -> str:
        return self.bundle.name

    def info(self, default: bool) -> ModelInfo:
        b = self.bundle
        scale = b.time.scale
        data = {k: v for k, v in b.data.items() if k != "config"}
        return ModelInfo(
            name=b.name,
            version=b.version,
            channels=list(b.channels),
            log_channels=[c for c, lg in zip(b.channels, b.normalizer.log, strict=True) if lg],
            time_unit=b.time.unit,
            time_scale=scale,
            max_horizon=self.spec.limits.max_horizon / scale,
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
        bundle = load_checkpoint(path, device)
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
        )
        spec = ModelSpec(bundle.name, bundle.version, tuple(bundle.channels), limits, bundle.config.solver)
        forecaster = Forecaster.from_bundle(
            bundle,
            device,
            num_samples=settings.num_samples,
            batch_size=settings.max_batch_series,
            unusual_scales=settings.unusual_output_scales,
            strict=settings.warnings_as_errors,
            max_chunk_values=settings.max_solve_values,
        )
        served[bundle.name] = ServedModel(bundle, forecaster, spec)
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
    for n in sizes:
        series = [
            Series(id=f"warm{i}", times=np.array([0.0, 0.1, 0.3]), values=np.ones((3, d), dtype=np.float32))
            for i in range(n)
        ]
        for q in query_sets:
            model.forecaster.predict(series, [q] * n, levels=(0.1, 0.5, 0.9))


def calibrate(model: ServedModel, costs: CostModel, num_samples: int, series: int = 64) -> None:
    """Seed the cost model with a timed solve of `series` short series at the model's own tolerance
    (after warm-up, so it is timed warm): seconds per unit of work and evaluations per trajectory."""
    d = len(model.bundle.channels)
    packed = PackedSeries.from_series(
        [
            Series(id=f"c{i}", times=np.array([0.0, 0.1, 0.3, 0.6]), values=np.ones((4, d), dtype=np.float32))
            for i in range(series)
        ],
        [np.array([-0.1, 0.2, 0.5, 0.9])] * series,
    )
    fc = model.forecaster
    t0 = time.perf_counter()
    out = fc.predict_packed(packed, levels=(0.1, 0.5, 0.9))
    seconds = time.perf_counter() - t0
    nfe = float(out.nfe.mean()) if len(out) else 64.0
    costs.seed(model.name, fc.solver, 1.0, nfe)  # the units need the evaluations; the rate comes next
    units = float(costs.units(model.name, fc.solver, num_samples, np.full(series, 4), np.full(series, 4), d).sum())
    costs.seed(model.name, fc.solver, seconds / units, nfe)
    log.info("model %s: %.3g s per unit of work, %.1f evaluations per trajectory", model.name, seconds / units, nfe)
