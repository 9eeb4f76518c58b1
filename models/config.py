"""Configuration: frozen dataclasses holding plain values only, so they travel inside checkpoints.

Three groups, kept apart on purpose:
- `SolverConfig`: how ODEs are integrated. A server can change it without retraining.
- `ModelConfig`: the architecture, i.e. what the weights mean.
- `TrainConfig`: the optimisation recipe.
`ExperimentConfig` bundles them with the data description for the training CLI.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

from latentcast.times import TIME_UNITS

Activation = Literal["elu", "tanh", "softplus", "silu", "relu"]
EncoderKind = Literal["gru", "decay", "odernn"]
ModelKind = Literal["latent_ode", "rnn"]
Anchor = Literal["first", "last"]
Residual = Literal["none", "level"]
ContextPolicy = Literal["fixed", "random"]
Likelihood = Literal["all", "forecast"]
Normalization = Literal["robust", "standard", "minmax"]
ValTask = Literal["last", "half"]
InputGains = Literal["population", "series"]
InputEffectKind = Literal["change", "level"]
StaticInputs = Literal["encoder", "dynamics"]
InputDynamics = Literal["none", "levels"]

# Options that lost their ablation (bench/results/physionet2012_ablation.md, recipe_selection.md) and
# left the product after commit RETIRED_AT, where they still run: a key still holding the value every
# model used then is read and dropped (old checkpoints and files), any other value is refused.
RETIRED_AT = "53a4966"
RETIRED_KEYS: dict[tuple[str, str], object] = {("ModelConfig", "residual_fill"): "zero",
                                              ("TrainConfig", "loss_units"): "normalised"}  # fmt: skip
RETIRED_VALUES: dict[tuple[str, object], str] = {
    ("encoder", "gruode"): "a GRU-ODE-Bayes posterior",
    ("residual", "change"): "the residual less the decoded z0",
}

ADAPTIVE_METHODS = ("dopri5", "bosh3")
FIXED_METHODS = ("euler", "midpoint", "rk4")
METHODS = ADAPTIVE_METHODS + FIXED_METHODS


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and what to change."""


def _check(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{field}: {msg}")


# Named accuracy levels a request may ask for: (rtol, atol); "default" is each model's own setting.
LEVELS: dict[str, tuple[float, float] | None] = {"fast": (1e-2, 1e-3), "default": None, "precise": (1e-6, 1e-8)}


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """How an ODE is integrated.

    `method`: one of METHODS. Adaptive methods (dopri5, bosh3) use `rtol`/`atol`; fixed-step methods
    take `step_size` (model time units). `max_num_steps` bounds the work of any single solve: a solve
    that needs more raises `SolverError` instead of running forever. `adjoint` selects
    `torchdiffeq.odeint_adjoint` for training (memory O(1) in the number of steps).
    """

    LEVELS: ClassVar[tuple[str, ...]] = tuple(LEVELS)  # the named accuracy levels of `at_accuracy`

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    step_size: float = 0.05
    max_num_steps: int = 2000
    adjoint: bool = False

    def __post_init__(self) -> None:
        _check(self.method in METHODS, "solver.method", f"{self.method!r} is not one of {list(METHODS)}")
        _check(0 < self.rtol < 1, "solver.rtol", f"must be in (0, 1), got {self.rtol}")
        _check(0 < self.atol < 1, "solver.atol", f"must be in (0, 1), got {self.atol}")
        _check(self.step_size > 0, "solver.step_size", f"must be > 0, got {self.step_size}")
        _check(
            0 < self.max_num_steps <= 10**6,
            "solver.max_num_steps",
            f"must be in [1, 1e6] (a finite bound), got {self.max_num_steps}",
        )

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    def used(self) -> dict[str, Any]:
        """What an answer reports it was solved with."""
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol, "max_num_steps": self.max_num_steps}

    def at_accuracy(
        self, level: str | None = None, rtol: float | None = None, atol: float | None = None
    ) -> SolverConfig:
        """These settings at a named accuracy level (LEVELS; "default" keeps them) and/or explicit
        tolerances, which win over the level's. Only adaptive methods have a tolerance to set."""
        if level is None and rtol is None and atol is None:
            return self
        if not self.adaptive:
            raise ConfigError(
                f"solver.method {self.method!r} takes fixed steps of solver.step_size; a tolerance does not apply"
            )
        if level is not None and level not in LEVELS:
            raise ConfigError(f"solver level {level!r} is not one of {sorted(LEVELS)}")
        base = LEVELS.get(level or "default") or (self.rtol, self.atol)
        return dataclasses.replace(
            self, rtol=rtol if rtol is not None else base[0], atol=atol if atol is not None else base[1]
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture.

    kind: "latent_ode" (the product) or "rnn" (the paper's RNN baseline, for comparison only).
    encoder: "gru" (Chen 2018: GRU run backwards over [x, mask, Δt]), "decay" (the GRU with GRU-D's
    per-channel decay of unobserved inputs, Che 2018) or "odernn" (Rubanova 2019).
    anchor: where z0 lives. "first": at the first observation, encoder runs backwards (the papers).
        "last": at the last observation, encoder runs forwards (fresher state for forecasting).
    obs_std: the decoder's Gaussian σ in normalised units; with learn_std it is only the start value.
    input_rates: learned decay rates (compartments) per event kind, for a model with inputs.
    input_gains: "population": the compartments' gains and rates depend on the static covariates only;
        "series": also on each series' posterior mean state (bench/results/interventions.md).
    input_effect: with a residual decoder, "change": the inputs add the change in their effect since each
        channel's last observation, so an unchanged regimen costs the model nothing; "level": their effect.
    static_inputs: where static covariates (`data.static`) enter: "encoder" (with each observation, and
        scaling the compartments), or "dynamics": also as constant inputs of the vector field, as
        `static_channels` do for channels.
    input_dynamics: "levels": the level inputs (infusion rates) also drive the vector field, dz/dt =
        f(z, u(t)), u each level through first-order lags at fixed rates (continuous in t: no jumps for the
        solver to step over), so the latent trajectory knows whether an infusion runs; "none": they enter
        through the decoder's compartments only.
    residual: "none": the decoder gives values. "level": the decoded trajectory is the change from each
        channel's last observed value in the context (the encoder still sees absolute values), so "no
        change" costs the model nothing. (true / false read as "level" / "none".)
    """

    kind: ModelKind = "latent_ode"
    latent_dim: int = 8
    encoder: EncoderKind = "gru"
    encoder_hidden: int = 32
    encoder_ode_hidden: int = 32
    encoder_substeps: int = 2
    anchor: Anchor = "first"
    dynamics_hidden: int = 64
    dynamics_depth: int = 2
    activation: Activation = "elu"
    time_input: bool = False
    decoder_hidden: int = 0
    obs_std: float = 0.1
    learn_std: bool = False
    min_std: float = 1e-3
    residual: Residual = "none"
    static_channels: tuple[int, ...] = ()
    input_rates: int = 4
    input_gains: InputGains = "population"
    input_effect: InputEffectKind = "change"
    static_inputs: StaticInputs = "encoder"
    input_dynamics: InputDynamics = "none"
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)

    def __post_init__(self) -> None:
        if isinstance(self.residual, bool):  # the first form of the setting
            object.__setattr__(self, "residual", "level" if self.residual else "none")
        _check(self.residual in get_args(Residual), "model.residual", _one_of("residual", self.residual, Residual))
        _check(self.kind in get_args(ModelKind), "model.kind", f"must be one of {get_args(ModelKind)}")
        _check(self.encoder in get_args(EncoderKind), "model.encoder", _one_of("encoder", self.encoder, EncoderKind))
        _check(self.anchor in get_args(Anchor), "model.anchor", f"must be one of {get_args(Anchor)}")
        _check(
            self.activation in get_args(Activation),
            "model.activation",
            f"must be one of {get_args(Activation)}",
        )
        for name in ("latent_dim", "encoder_hidden", "encoder_ode_hidden", "dynamics_hidden"):
            _check(getattr(self, name) >= 1, f"model.{name}", "must be >= 1")
        _check(self.dynamics_depth >= 1, "model.dynamics_depth", "must be >= 1 hidden layer")
        _check(self.encoder_substeps >= 1, "model.encoder_substeps", "must be >= 1")
        _check(
            all(isinstance(i, int) and i >= 0 for i in self.static_channels)
            and len(set(self.static_channels)) == len(self.static_channels),
            "model.static_channels",
            f"must be distinct channel indices >= 0, got {list(self.static_channels)}",
        )
        choices = {"input_gains": InputGains, "input_effect": InputEffectKind, "static_inputs": StaticInputs,
                   "input_dynamics": InputDynamics}  # fmt: skip
        for name, kind in choices.items():
            value = getattr(self, name)
            _check(value in get_args(kind), f"model.{name}", _one_of(name, value, kind))
        _check(1 <= self.input_rates <= 32, "model.input_rates", "must be in [1, 32] (compartments per event kind)")
        _check(self.decoder_hidden >= 0, "model.decoder_hidden", "must be >= 0 (0 = linear decoder)")
        _check(self.obs_std > self.min_std > 0, "model.obs_std", "must exceed model.min_std > 0")

    def describe(self) -> str:
        """One line saying what the model is."""
        if self.kind == "rnn":
            return f"autoregressive GRU ({self.encoder_hidden} units) over [x, mask, Δt], Gaussian likelihood"
        dec = f"MLP {self.decoder_hidden}" if self.decoder_hidden else "linear"
        static = f" + static channels {list(self.static_channels)}" if self.static_channels else ""
        return (
            f"{self.encoder.upper()} encoder ({self.encoder_hidden}), z0 at the {self.anchor} observation, latent "
            f"{self.latent_dim}, dynamics MLP {self.dynamics_depth}×{self.dynamics_hidden} {self.activation} of z"
            f"{static}, {dec} decoder, {self.solver.method} rtol {self.solver.rtol:g} atol {self.solver.atol:g}"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe.

    context: "fixed" uses each series' own context length (data sets that define one, e.g. spirals'
    observation window); "random" draws a cut per series and epoch in [min_context, n - 1] so the
    model learns to forecast from any history (pbcseq, user data).
    std_lr_scale: learning-rate multiplier for the decoder's learned σ, so that it tracks the noise level
    of the current fit instead of lagging it (matters when early stopping picks an early epoch).
    likelihood: "all" scores every observed value (context reconstruction and forecast window, the
    papers' interpolation objective); "forecast" scores only the points after the context (Rubanova et
    al.'s extrapolation objective), for data whose paths wander more than one smooth curve explains.
    patience: stop when validation has not improved for this many epochs (0: run every epoch).
    max_minutes: stop after the epoch that would otherwise end past this budget (0: no budget).
    warmup_epochs: the learning rate rises linearly over these epochs, then follows a cosine to lr_min.
    val_task: what validation forecasts, per series: "last" its last point from the rest, "half" its
    second half from its first (more held-out points, longer horizons).
    max_target_times: score at most this many of a batch's distinct target times per step, drawn at
    random (0: all); the solver's output times, and so the cost of a step, stay bounded.
    channel_balance: each channel's values weigh ∝ (its count of training values)^-channel_balance in
    the likelihood, scaled so the mean weight per value is 1. 0: every value alike (rare channels get
    little say); 1: every channel alike, as in metrics averaged per variable (PhysioNet 2012).
    length_pool: batch series of similar length together: each run of this many batches' worth of the
    shuffled series is sorted by length before it is cut into batches, and the batches are shuffled
    (less padding in the encoder and the targets, the order still random; 0: off).
    min_val_points: held-out points (of `val_task`) that validation needs to choose an epoch and fit the
    intervals; below it, series move from training to validation (seeded) while validation stays within
    `max_val_share` of the training and validation series. folds: when validation still falls short on
    a table of at most `cv_max_series` training and validation series, the number of epochs is chosen by
    k-fold cross-validation over them, the model is trained on all of them for that many epochs, and its
    intervals are calibrated on the folds' out-of-fold forecasts (0: off). A larger table short of points
    keeps its split and is warned (k + 1 trainings would cost more there than a larger share of it).
    window_factor: with random contexts, a training series spanning more than this many times the median
    training span is cut, each epoch, to a random window of that length (its events all kept). 0 (the
    default): whole series. Off because it lost where it was meant to help: on Quinidine (18 of 136
    records over 10 median spans) the validation forecasts of the long records, never trained at their
    length, blew up (validation NMSE 1e2 to 1e8; bench/results/interventions.md).
    """

    epochs: int = 50
    batch_size: int = 64
    lr: float = 3e-3
    lr_min: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    std_lr_scale: float = 1.0
    iwae_samples: int = 1
    kl_anneal_epochs: int = 0
    context: ContextPolicy = "random"
    likelihood: Likelihood = "all"
    min_context: int = 1
    val_samples: int = 32
    plot_series: int = 4
    seed: int = 0
    patience: int = 0
    max_minutes: float = 0.0
    warmup_epochs: int = 0
    val_task: ValTask = "last"
    max_target_times: int = 0
    channel_balance: float = 0.0
    length_pool: int = 0
    min_val_points: int = 100
    max_val_share: float = 0.25
    folds: int = 5
    cv_max_series: int = 200
    window_factor: float = 0.0

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0 and 0 <= self.lr_min <= self.lr, "train.lr", "need 0 <= lr_min <= lr, lr > 0")
        _check(self.iwae_samples >= 1, "train.iwae_samples", "must be >= 1 (1 = plain ELBO)")
        _check(self.std_lr_scale > 0, "train.std_lr_scale", "must be > 0")
        _check(self.kl_anneal_epochs >= 0, "train.kl_anneal_epochs", "must be >= 0")
        _check(self.context in get_args(ContextPolicy), "train.context", f"one of {get_args(ContextPolicy)}")
        _check(self.likelihood in get_args(Likelihood), "train.likelihood", f"one of {get_args(Likelihood)}")
        _check(self.min_context >= 1, "train.min_context", "must be >= 1")
        _check(self.val_samples >= 1, "train.val_samples", "must be >= 1")
        _check(self.patience >= 0, "train.patience", "must be >= 0 (0: no early stopping)")
        _check(self.max_minutes >= 0, "train.max_minutes", "must be >= 0 (0: no budget)")
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0")
        _check(self.val_task in get_args(ValTask), "train.val_task", f"one of {get_args(ValTask)}")
        _check(self.max_target_times >= 0, "train.max_target_times", "must be >= 0 (0: all)")
        _check(0 <= self.channel_balance <= 1, "train.channel_balance", "must be in [0, 1] (0: off)")
        _check(self.length_pool >= 0, "train.length_pool", "must be >= 0 (0: off)")
        _check(self.min_val_points >= 0, "train.min_val_points", "must be >= 0 (0: keep the split as it is)")
        _check(0 < self.max_val_share < 1, "train.max_val_share", "must be in (0, 1), e.g. 0.25")
        _check(self.folds == 0 or self.folds >= 2, "train.folds", "must be 0 (off) or >= 2")
        _check(self.cv_max_series >= 0, "train.cv_max_series", "must be >= 0")
        _check(
            self.window_factor == 0 or self.window_factor >= 1,
            "train.window_factor",
            "must be 0 (whole series) or >= 1 (windows of that many median spans)",
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data, how to read it, and how to split it.

    name: "spirals", "pbcseq" or a path to a long table (CSV/parquet) with columns id, time, channels.
    time_unit/time_scale: model time = (time in `time_unit`) × time_scale. Date-time columns are first
    converted to `time_unit` ("day", "hour", "minute", "second", "week"; None: the largest of second,
    minute, hour, day in which the median series spans at least 2); numeric times need their unit
    named ("unitless" for numbers with no calendar meaning). time_scale None: chosen from
    the training series so that their median span is `TARGET_SPAN` model time units.
    log_channels: channels modelled on a log scale (must be positive); None: chosen from the training
    split (every value > 0 and the log makes a right-skewed channel more symmetric); () none.
    normalize: per-channel centre and scale: "robust" (median and IQR / 1.349, which a few gross
    errors cannot move), "standard" (mean and standard deviation) or "minmax" (minimum and range, as
    benchmarks that score in min-max units do). outlier_z: training values further
    than this many scales from the centre count as entry errors: excluded from training and counted in
    the report (0: keep everything).
    bounds: channel → [lower, upper], the values a measurement of it can take (inf: none; the key "*":
    every channel); values outside are set aside in training and serving, forecasts clipped to them.
    missing_values: channel (or "*") → the values a source writes for "unknown" (e.g. [-1]); read as not
    observed. bounds_source: where the bounds come from (shown with them). All three go into the
    checkpoint (`models.validity`). events, static: input columns beside the channels (`models.inputs`):
    values at the times they happen (doses), and one value per series (age, weight); levels: input
    columns whose value holds until their next value (an infusion rate), beside the events.
    """

    name: str = "spirals"
    channels: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    log_channels: tuple[str, ...] | None = None
    time_unit: str | None = None
    time_scale: float | None = None
    normalize: Normalization = "robust"
    outlier_z: float = 10.0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    n_series: int = 1250
    n_obs: tuple[int, ...] = (30, 50, 100)
    noise_std: float = 0.3
    bounds: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    missing_values: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    bounds_source: str = ""

    def __post_init__(self) -> None:
        bounds = {str(k): tuple(float(x) for x in v) for k, v in dict(self.bounds).items()}
        bad = [k for k, v in bounds.items() if len(v) != 2 or not v[0] < v[1]]
        _check(not bad, "data.bounds", f"{bad[:1]}: need [lower, upper] with lower < upper (inf for none)")
        object.__setattr__(self, "bounds", bounds)
        marks = self.missing_values
        if not isinstance(marks, dict):  # a plain list: every channel
            marks = {"*": marks}
        object.__setattr__(self, "missing_values", {str(k): tuple(float(x) for x in v) for k, v in marks.items()})
        _check(
            len(self.split) == 3 and abs(sum(self.split) - 1) < 1e-6,
            "data.split",
            "three fractions summing to 1",
        )
        _check(all(f >= 0 for f in self.split), "data.split", "fractions must be >= 0")
        _check(self.time_scale is None or self.time_scale > 0, "data.time_scale", "must be > 0 (or unset: auto)")
        _check(
            self.time_unit is None or self.time_unit in TIME_UNITS,
            "data.time_unit",
            f"one of {', '.join(TIME_UNITS)} (or unset for date-times: chosen from the data)",
        )
        named = [*self.channels, *self.events, *self.levels, *self.static]
        _check(
            len(set(named)) == len(named),
            "data",
            f"a column is named twice among channels, events, levels and static: "
            f"{sorted({c for c in named if named.count(c) > 1})}",
        )
        _check(self.normalize in get_args(Normalization), "data.normalize", f"one of {get_args(Normalization)}")
        _check(self.outlier_z >= 0, "data.outlier_z", "must be >= 0 (0: keep every value)")
        logs = set(self.log_channels or ())
        _check(
            not logs - set(self.channels) or not self.channels,
            "data.log_channels",
            f"{sorted(logs - set(self.channels))} are not in data.channels",
        )


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


T = TypeVar("T")

_NESTED: dict[type, dict[str, type]] = {
    ModelConfig: {"solver": SolverConfig},
    ExperimentConfig: {"data": DataConfig, "model": ModelConfig, "train": TrainConfig},
}


def from_dict(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    """Build a config dataclass from plain values (JSON/TOML), rejecting unknown keys by name."""
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = _without_retired(cls.__name__, values, where)
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        nested = _NESTED.get(cls, {}).get(key)
        if nested is not None:
            kwargs[key] = from_dict(nested, value, f"{where}{key}.")
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _without_retired(cls: str, values: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """`values` less the retired keys that hold the value every model used (what old checkpoints and
    files carry); a retired key with any other value is refused, naming the commit that still runs it."""
    out = dict(values)
    for (owner, key), kept in RETIRED_KEYS.items():
        if owner == cls and key in out:
            if out[key] != kept:
                raise ConfigError(
                    f"{where or cls + '.'}{key} = {out[key]!r}: retired (it lost its ablation); remove the key, or "
                    f"check out commit {RETIRED_AT} to reproduce a run that used it"
                )
            del out[key]
    return out


def _one_of(field: str, value: object, kind: Any) -> str:
    """The message for a value outside a Literal: the choices, and the commit for a retired one."""
    retired = RETIRED_VALUES.get((field, value))
    if retired is not None:
        return f"{value!r} ({retired}) was retired; check out commit {RETIRED_AT} to reproduce it"
    return f"must be one of {get_args(kind)}"


SPIRALS_ONLY = ("n_series", "n_obs", "noise_std")  # the synthetic spirals' generator, in DataConfig


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) for JSON and checkpoints; a DataConfig (alone or inside an
    ExperimentConfig) leaves out the spirals generator's settings for any other data (their defaults
    come back on reading)."""
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    data = out if isinstance(config, DataConfig) else out.get("data") if isinstance(config, ExperimentConfig) else None
    if data is not None and data.get("name") != "spirals":
        for key in SPIRALS_ONLY:
            data.pop(key, None)
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values of `override` win, nested tables merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into plain nested dicts."""
    path = Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"{path}: config files must end in .toml or .json")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    data: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return data
