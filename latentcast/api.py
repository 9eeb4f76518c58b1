"""The in-process API: a long table in, a long table of forecasts out, no server.

    model = latentcast.load("pbcseq")                       # an embedded model or a checkpoint path
    fc = model.predict(obs, query_times=["2027-01-01"], quantiles=[0.1, 0.9])
    model = latentcast.fit(obs, channels=["hr", "bp"], time_unit="hour")
    model.save("runs/mine/model.pt")

Tables are those of the CLI and the HTTP client (`latentcast.frames` converts them for all three):
`id`, `time` (numbers in the model's time unit, or date-times) and one column per channel, empty where
not observed. Forecasts come back as `id, time, channel, mean, q<level>…`, one row per series × query
time × channel.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from latentcast.frames import DataError, QueryTimes, Times, from_frame, note_solver, query_table, to_frame
from latentcast.models import (
    ConfigError,
    FieldError,
    Forecaster,
    ModelBundle,
    PackedForecast,
    Status,
    build_experiment,
    dataset_from_frame,
    find_checkpoint,
    load_checkpoint,
    pack,
    resolve_device,
    save_checkpoint,
    train_model,
)
from latentcast.times import to_unit


class Model:
    """A trained model with what gives its numbers meaning (channels, time unit, normalisation).

    device: "auto" (the GPU when torch sees one), "cpu" or "cuda". num_samples: latent samples behind
    means and quantiles. As the server does, inputs the model cannot represent are refused with a
    `DataError`: a query further than `max_horizon_factor` × the longest training series span from a
    series' observations (or observations spanning more), a value more than `max_value_sigmas` training
    standard deviations from the training mean (after the log of log channels); None lifts a limit.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str = "auto",
        num_samples: int = 32,
        max_horizon_factor: float | None = 2.0,
        max_value_sigmas: float | None = 20.0,
        batch_size: int = 1024,
    ):
        self.bundle = bundle
        self.device = resolve_device(device)
        self.max_horizon_factor = max_horizon_factor
        self.max_value_sigmas = max_value_sigmas
        self.forecaster = Forecaster.from_bundle(bundle, self.device, num_samples=num_samples, batch_size=batch_size)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def channels(self) -> tuple[str, ...]:
        return self.bundle.channels

    @property
    def time_unit(self) -> str:
        return self.bundle.time.unit

    @property
    def metrics(self) -> dict[str, Any]:
        return self.bundle.metrics

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, version {self.version}, channels {list(self.channels)}, "
            f"time unit {self.time_unit}, on {self.device})"
        )

    def predict(
        self,
        obs: pd.DataFrame,
        query_times: QueryTimes,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        id_col: str = "id",
        time_col: str = "time",
        errors: Literal["raise", "nan"] = "raise",
        solver: Literal["fast", "default", "precise"] | None = None,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> pd.DataFrame:
        """Forecast every series of `obs` at its query times.

        query_times: one list for every series, a mapping id → list, or a table with columns id, time;
        numbers (the model's time unit) or date-times, like `obs`. A channel of the model missing from
        `obs` counts as not observed. Returns id, time, channel, mean, q<level>…. A series the solver
        cannot answer raises `SolverFailed` naming it; with errors="nan" its rows are NaN instead.

        solver, rtol, atol: the solve's accuracy, as the server's `"solver"` field: a named level
        (fast: rtol 1e-2, atol 1e-3; default: the model's own; precise: 1e-6, 1e-8) and/or tolerances,
        which win over the level's. `attrs["solver"]` of the answer says what was used, `attrs["nfe"]`
        what it cost (series id → vector-field evaluations per trajectory).
        """
        levels = tuple(float(q) for q in quantiles)
        bad = [q for q in levels if not 0.0 < q < 1.0]
        if bad:
            raise DataError(f"quantiles: {bad} not in (0, 1)")
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if tol is not None and not 0.0 < tol < 1.0:
                raise DataError(f"{name}: {tol!r} not in (0, 1)")
        try:
            config = self.forecaster.solver.at_accuracy(solver, rtol, atol)
        except ConfigError as exc:
            raise DataError(str(exc)) from None
        table = from_frame(obs, self.channels, id_col, time_col)
        queries, q_off = query_table(table, query_times, id_col, time_col)
        ts, tq = self._unit(table.times, time_col), self._unit(queries, "query_times")
        n_obs, n_q = np.diff(table.offsets), np.diff(q_off)

        def show(field: str, i: int, j: int) -> str:
            times, offs = (table.times, table.offsets) if field == "timestamps" else (queries, q_off)
            k = int(offs[i]) + j
            return repr(str(times.as_column()[k]) if times.is_datetime else float(times.values[k]))

        horizon = np.inf if self.max_horizon_factor is None else self.bundle.max_horizon(self.max_horizon_factor)
        try:
            packed = pack(
                table.ids,
                ts,
                n_obs,
                table.values,
                tq,
                n_q,
                self.bundle.time,
                horizon,
                show,
                self.bundle.normalizer,
                self.max_value_sigmas if self.max_value_sigmas is not None else np.inf,
            )
        except FieldError as exc:
            field = {"timestamps": time_col, "values": "values", "query_times": "query_times"}[exc.field]
            knob = {"max_horizon": "max_horizon_factor", "max_sigmas": "max_value_sigmas"}.get(exc.limit or "")
            hint = f" (Model({knob}=...) or None)" if knob else ""
            raise DataError(f"series {table.keys[exc.series]!r}: {field}: {exc.msg}{hint}") from None
        fc = self.forecaster.predict_packed(packed, levels=levels, solver=config)
        _check(fc, table.keys, errors)
        out = to_frame(table.keys, q_off, queries, self.channels, fc.mean, fc.quantiles, levels, id_col, time_col)
        return note_solver(out, config.used(), table.keys, fc.nfe)

    def _unit(self, times: Times, what: str) -> np.ndarray:
        """Times → the model's time unit (numbers are taken as already in it)."""
        if not times.is_datetime:
            return times.values
        if self.bundle.time.unit == "unitless":
            raise DataError(f"{what}: model {self.name!r} takes numeric times, not date-times")
        return to_unit(times.values, self.bundle.time.unit)

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint (loads again with `latentcast.load(path)` or `latentcast serve --model`)."""
        return save_checkpoint(path, self.bundle)


class SolverFailed(RuntimeError):
    """The solver could not forecast some series; `series` names them (Model.predict(errors="nan")
    returns the others, with NaN for these)."""

    def __init__(self, series: list[Any], reason: str):
        self.series = series
        shown = ", ".join(map(repr, series[:5])) + (" …" if len(series) > 5 else "")
        super().__init__(f"no forecast for series {shown}: {reason}")


def _check(fc: PackedForecast, keys: Sequence[Any], errors: str) -> None:
    failed = np.flatnonzero(fc.status != Status.OK)
    if not failed.size:
        return
    if errors == "raise":
        raise SolverFailed([keys[int(i)] for i in failed], Status(int(fc.status[failed[0]])).describe())
    q = fc.query_offsets
    for i in failed:
        fc.mean[q[i] : q[i + 1]] = np.nan
        fc.quantiles[:, q[i] : q[i + 1]] = np.nan


def load(name_or_path: str | Path, device: str = "auto", **kwargs: Any) -> Model:
    """An embedded model by name ("pbcseq", "physionet2012", "spirals") or a checkpoint file; `kwargs` go to
    `Model`."""
    return Model(load_checkpoint(find_checkpoint(name_or_path), resolve_device(device)), device, **kwargs)


def fit(
    obs: pd.DataFrame,
    channels: Sequence[str],
    *,
    time_unit: str = "day",
    time_scale: float | None = None,
    log_channels: Sequence[str] | None = None,
    name: str = "model",
    epochs: int | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    id_col: str = "id",
    time_col: str = "time",
) -> Model:
    """Train a latent ODE on a long table (what `latentcast train --data FILE` does) and return the best
    model by validation forecast error.

    The series are split by id into train/validation/test (80/10/10, seeded). time_scale and
    log_channels None: chosen from the training series (as `latentcast train` does). `config`: a TOML/JSON
    file or a dict overriding the default recipe (models/configs/default.toml), e.g.
    {"model": {"latent_dim": 16}, "train": {"batch_size": 32}}. `out`: keep the run directory
    (best.pt, last.pt, metrics.json); by default it is temporary.
    """
    overrides = dict(config) if isinstance(config, Mapping) else {}
    data = {
        "name": name,
        "channels": list(channels),
        "log_channels": list(log_channels) if log_channels is not None else None,
        "time_unit": time_unit,
        "time_scale": time_scale,
    }
    exp = build_experiment(
        "default",
        None if isinstance(config, Mapping) else config,
        data={**overrides.get("data", {}), **{k: v for k, v in data.items() if v is not None}},
        model=overrides.get("model", {}),
        train={**overrides.get("train", {}), "seed": seed, **({"epochs": epochs} if epochs else {})},
    )
    split = dataset_from_frame(obs, exp.data, {"source": "DataFrame"}, id_col, time_col)
    with tempfile.TemporaryDirectory(prefix="latentcast-fit-") as tmp:
        run = Path(out) if out is not None else Path(tmp)
        result = train_model(exp, split, run, device=device, show_progress=progress)
        return Model(load_checkpoint(result.best, resolve_device(device)), device)
