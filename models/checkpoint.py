"""Checkpoints: one `.pt` file of plain types and tensors, loaded with `weights_only=True` (no pickle).

It holds everything needed to serve the model: format version, name and version, the model config,
weights, normalisation statistics, channel names, time unit and scale, a description of the training
data and its evaluation metrics. Training checkpoints add the optimiser state for resuming.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentcast.models.config import ConfigError, ModelConfig, from_dict, to_dict
from latentcast.models.data import DataError, Normalizer, TimeSpec
from latentcast.models.inputs import InputSpec
from latentcast.models.latent_ode import LatentODE
from latentcast.models.rnn_baseline import RNNBaseline
from latentcast.models.validity import Validity

FORMAT = "latentcast.checkpoint"
FORMAT_VERSION = 1
EMBEDDED_DIR = Path(__file__).parent / "embedded"


def embedded_models() -> list[Path]:
    """The default models shipped in the package (models/embedded/*.pt), sorted by name."""
    return sorted(EMBEDDED_DIR.glob("*.pt"))


def find_checkpoint(name_or_path: str | Path) -> Path:
    """An embedded model's name (e.g. "pbcseq") or a checkpoint path → the file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    embedded = {p.stem: p for p in embedded_models()}
    if str(name_or_path) in embedded:
        return embedded[str(name_or_path)]
    raise CheckpointError(
        f"{name_or_path}: no such checkpoint file, and not an embedded model's name ({', '.join(sorted(embedded))})"
    )


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message says which file and what is wrong."""


# model.kind → its class (as ENCODERS for model.encoder and the activations in models.dynamics)
MODELS: dict[str, type[LatentODE] | type[RNNBaseline]] = {"latent_ode": LatentODE, "rnn": RNNBaseline}


def build_model(cfg: ModelConfig, n_channels: int, inputs: InputSpec | None = None) -> LatentODE | RNNBaseline:
    """The module for `cfg`; `inputs` (events, static covariates) only for a latent ODE."""
    if inputs:
        if cfg.kind != "latent_ode":
            raise ConfigError(f"model.kind {cfg.kind!r} takes no inputs (events/static); use latent_ode")
        return LatentODE(cfg, n_channels, inputs)
    return MODELS[cfg.kind](cfg, n_channels)


@dataclasses.dataclass
class ModelBundle:
    """A model with everything that gives its numbers meaning."""

    name: str
    model: LatentODE | RNNBaseline
    normalizer: Normalizer
    time: TimeSpec
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: str = ""
    created: str = ""
    calibration: tuple[float, ...] | None = None  # per-channel spread factors (models.training.calibrate)
    persistence: tuple[float, ...] | None = None  # pull toward the last value (models.training.calibrate)
    validity: Validity | None = None  # bounds and missing-value markers (None: none declared)

    def __post_init__(self) -> None:
        if self.validity is None:
            self.validity = Validity.none(self.normalizer.channels)
        elif self.validity.channels != self.normalizer.channels:
            raise CheckpointError(f"validity is declared for channels {list(self.validity.channels)}, not the model's")

    @property
    def limits(self) -> Validity:
        """The bounds and markers (none declared: unbounded, no markers)."""
        assert self.validity is not None
        return self.validity

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def channels(self) -> tuple[str, ...]:
        return self.normalizer.channels

    @property
    def inputs(self) -> InputSpec:
        """The events and static covariates the model takes (none: an empty spec)."""
        return getattr(self.model, "inputs", None) or InputSpec()

    @property
    def entry_error_scales(self) -> float:
        """How far out (normalised units) its training set values aside as entry errors (inf: none)."""
        z = (self.data.get("config") or {}).get("outlier_z")
        return float(z) if isinstance(z, int | float) and z > 0 else math.inf

    def max_horizon(self, factor: float) -> float:
        """How far (model time) a query may lie from a series' observations: `factor` × the longest
        training series span; unbounded when the training data did not record it."""
        span = self.data.get("max_span")
        return factor * float(span) if span else math.inf

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
        """A checkpoint file, or an embedded model's name ("pbcseq"), read and checked (`load_checkpoint`)."""
        return load_checkpoint(path, device)

    def save(self, path: str | Path, train_state: dict[str, Any] | None = None) -> Path:
        """Write this bundle as a checkpoint (`save_checkpoint`); returns the path."""
        return save_checkpoint(path, self, train_state)

    @staticmethod
    def embedded() -> list[Path]:
        """The checkpoints shipped in the package (models/embedded/*.pt), sorted by name."""
        return embedded_models()


def weights_digest(model: nn.Module) -> str:
    """Short content hash of the weights: the model's version."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays as Python numbers and lists, so that a
    weights-only load, which refuses numpy objects, reads it back."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return value


def save_checkpoint(path: str | Path, bundle: ModelBundle, train_state: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": bundle.name,
        "version": weights_digest(bundle.model),
        "created": bundle.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": to_dict(bundle.config),
        "n_channels": bundle.model.n_channels,
        "state_dict": {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()},
        "normalizer": bundle.normalizer.to_dict(),
        "time": {"unit": bundle.time.unit, "scale": bundle.time.scale},
        "data": plain(bundle.data),
        "metrics": plain(bundle.metrics),
        "calibration": list(bundle.calibration) if bundle.calibration is not None else None,
        "persistence": list(bundle.persistence) if bundle.persistence is not None else None,
        "validity": bundle.limits.to_dict(),
        "inputs": bundle.inputs.to_dict(),
    }
    if train_state is not None:
        payload["train_state"] = plain(train_state)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_payload(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (weights-only unpickler: tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types for foreign or corrupt files
        first = str(exc).strip().split("\n", 1)[0].split(". ", 1)[0][:160]
        raise CheckpointError(
            f"{path}: not a readable weights-only checkpoint ({type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a latentcast checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version}; this code reads version {FORMAT_VERSION}")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Read and check a checkpoint (a file, or an embedded model's name such as "pbcseq"): a config that
    validates, weights that fit it and are finite, and normalisation statistics that can be inverted.
    Anything else is a `CheckpointError` naming the file."""
    path = find_checkpoint(path)
    payload = read_payload(path)
    try:
        config = dict(payload["config"])
        if payload.get("inputs") and "input_effect" not in config:  # written before the option: the level
            config["input_effect"] = "level"
        cfg = from_dict(ModelConfig, config)
        normalizer = Normalizer.from_dict(payload["normalizer"])
        if not normalizer.method:  # older checkpoints: the training config says which statistics
            method = (payload.get("data") or {}).get("config", {}).get("normalize") or ""
            normalizer = dataclasses.replace(normalizer, method=str(method))
        time = TimeSpec(**payload["time"])
        inputs = InputSpec.from_dict(payload.get("inputs"))
        model = build_model(cfg, int(payload["n_channels"]), inputs)
    except (ConfigError, DataError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: its configuration is not valid ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({exc})") from exc
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights in {bad[:3]}; this model cannot forecast")
    stats = np.asarray([*normalizer.mean, *normalizer.std], dtype=np.float64)
    if not np.isfinite(stats).all() or min(normalizer.std) <= 0 or len(normalizer.channels) != model.n_channels:
        raise CheckpointError(f"{path}: normalisation statistics are not usable (std must be finite and > 0)")
    try:
        validity = Validity.from_dict(payload["validity"]) if payload.get("validity") else None
    except (DataError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its bounds or missing-value markers are not valid ({exc})") from None
    model.to(device).eval()
    return ModelBundle(
        name=str(payload["name"]),
        model=model,
        normalizer=normalizer,
        time=time,
        data=dict(payload["data"]),
        metrics=dict(payload["metrics"]),
        version=str(payload["version"]),
        created=str(payload["created"]),
        calibration=_calibration(path, payload.get("calibration"), model.n_channels),
        persistence=_persistence(path, payload.get("persistence"), model.n_channels),
        validity=validity,
    )


def _calibration(path: str | Path, value: Any, n_channels: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    factors = tuple(float(v) for v in value)
    if len(factors) != n_channels or not all(0 < f < 100 for f in factors):
        raise CheckpointError(f"{path}: calibration factors must be one per channel, each in (0, 100)")
    return factors


def _persistence(path: str | Path, value: Any, n_channels: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    taus = tuple(float(v) for v in value)
    if len(taus) != n_channels or not all(math.isfinite(t) and t >= 0 for t in taus):
        raise CheckpointError(f"{path}: persistence must be one time scale per channel, each finite and >= 0")
    return taus
