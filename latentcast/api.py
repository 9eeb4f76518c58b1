"""The in-process API: a long table in, a long table of forecasts out, no server.

    model = latentcast.load("pbcseq")                       # an embedded model or a checkpoint path
    fc = model.predict(obs, query_times=["2027-01-01"], quantiles=[0.1, 0.9])
    model = latentcast.fit(obs, channels=["hr", "bp"], time_unit="hour")
    model.save("runs/mine/model.pt")

Tables are those of the CLI and the HTTP client (`latentcast.frames` converts them for all three):
`id`, `time` (numbers in the model's time unit, or date-times) and one column per channel, empty where
not observed. Forecasts come back as `id, time, channel, point, mean, q<level>…`, one row per series × query
time × channel.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from latentcast.frames import (
    DataError,
    LatentcastWarning,
    QueryTimes,
    Times,
    from_frame,
    note_outcome,
    note_solver,
    query_table,
    to_frame,
)
from latentcast.models import (
    ConfigError,
    Forecaster,
    Issue,
    Limits,
    ModelBundle,
    PackedForecast,
    Status,
    resolve_device,
)
from latentcast.models.training import build_experiment, dataset_from_frame, train_model
from latentcast.times import to_unit

if TYPE_CHECKING:
    from latentcast.backtest import Backtest

OnError = Literal["raise", "skip", "nan"]


class Model:
    """A trained model with what gives its numbers meaning (channels, time unit, normalisation, bounds).

    device: "auto" (the GPU when torch sees one), "cpu" or "cuda". num_samples: latent samples behind
    means and quantiles. As the server does, inputs the model cannot represent are refused (`Refused`,
    a `DataError`), among them a query further than `max_horizon_factor` × the longest training series
    span from a series' observations (None lifts it). What is unusual is answered with a warning
    (`attrs["warnings"]` of the answer, and a `LatentcastWarning`): a value outside its channel's
    physical bounds (set aside), a value more than `unusual_value_scales` from the training data on the
    model's own scale, an answer more than `unusual_output_scales` from it. `warnings_as_errors` refuses
    those instead.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str = "auto",
        num_samples: int = 32,
        max_horizon_factor: float | None = 2.0,
        unusual_value_scales: float = 20.0,
        unusual_output_scales: float = 50.0,
        warnings_as_errors: bool = False,
        batch_size: int = 1024,
    ):
        self.bundle = bundle
        self.device = resolve_device(device)
        self.max_horizon_factor = max_horizon_factor
        self.unusual_output_scales = unusual_output_scales
        horizon = math.inf if max_horizon_factor is None else bundle.max_horizon(max_horizon_factor)
        self.limits = Limits(
            bundle.time,
            horizon,
            bundle.normalizer,
            bundle.limits,
            unusual_value_scales,
            warnings_as_errors,
            bundle.entry_error_scales,
        )
        self.forecaster = Forecaster.from_bundle(
            bundle,
            self.device,
            num_samples=num_samples,
            batch_size=batch_size,
            unusual_scales=unusual_output_scales,
            strict=warnings_as_errors,
        )

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
    def events(self) -> tuple[str, ...]:
        """The event columns the model takes (doses: a value at the time it happens), () for none."""
        return self.bundle.inputs.events

    @property
    def static(self) -> tuple[str, ...]:
        """The static covariate columns the model takes (one value per series), () for none."""
        return self.bundle.inputs.static

    @property
    def log_channels(self) -> tuple[str, ...]:
        """The channels the model forecasts after a log: their `point` is the predictive median."""
        return tuple(c for c, lg in zip(self.channels, self.bundle.normalizer.log, strict=True) if lg)

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
        on_error: OnError = "raise",
        solver: Literal["fast", "default", "precise"] | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        errors: OnError | None = None,
        extra_columns: Literal["error", "ignore"] = "error",
    ) -> pd.DataFrame:
        """Forecast every series of `obs` at its query times.

        query_times: one list for every series, a mapping id → list, or a table with columns id, time;
        numbers (the model's time unit) or date-times, like `obs`. A channel of the model missing from
        `obs` counts as not observed (and is named in a warning); a column that is neither id, time nor
        a channel is a DataError (a misspelt channel), unless extra_columns="ignore". Returns id, time,
        channel, mean, q<level>….

        on_error: "raise" (default): any refused series raises `Refused` naming every one (its
        `.errors`), a series the solver cannot answer `SolverFailed`; "skip": the other series are
        answered and the refused ones listed in `attrs["errors"]` (id, field, msg); "nan": as skip, but
        a series the solver cannot answer keeps its rows, as NaN. `errors` is the former name of
        `on_error`. Warnings are in `attrs["warnings"]` (id, field, msg, kind) and raised as one
        `LatentcastWarning`.

        solver, rtol, atol: the solve's accuracy, as the server's `"solver"` field: a named level
        (fast: rtol 1e-2, atol 1e-3; default: the model's own; precise: 1e-6, 1e-8) and/or tolerances,
        which win over the level's. `attrs["solver"]` of the answer says what was used, `attrs["nfe"]`
        what it cost (series id → vector-field evaluations per trajectory).
        """
        if errors is not None:
            warnings.warn("Model.predict(errors=...) is now on_error=...", DeprecationWarning, stacklevel=2)
            on_error = errors
        if on_error not in ("raise", "skip", "nan"):
            raise DataError(f"on_error: {on_error!r} is not one of raise, skip, nan")
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
        spec = self.bundle.inputs
        table = from_frame(obs, [*self.channels, *spec.columns], id_col, time_col, extra_columns)
        queries, q_off = query_table(table, query_times, id_col, time_col)
        ts, tq = self._unit(table.times, time_col), self._unit(queries, "query_times")
        observed = table
        held: list[Any] = []
        if spec:  # rows with only event values are events, not observations
            rows, held = spec.split(table, ts, len(self.channels))
            observed, ts = table.subset(rows, len(self.channels)), ts[rows]
        n_obs, n_q = np.diff(observed.offsets), np.diff(q_off)

        def show(field: str, i: int, j: int) -> str:
            times, offs = (observed.times, observed.offsets) if field == "timestamps" else (queries, q_off)
            k = int(offs[i]) + j
            return repr(str(times.as_column()[k]) if times.is_datetime else float(times.values[k]))

        checked = self.limits.pack(table.ids, ts, n_obs, observed.values, tq, n_q, show)
        if spec:
            checked = checked.with_inputs([held[p] for p in checked.positions.tolist()], self.limits, spec)
        refused = [self._note(x, table.keys, time_col) for x in checked.refused]
        if refused and on_error == "raise":
            raise Refused(refused, len(table))
        if len(checked.packed):
            fc = self.forecaster.predict_packed(checked.packed, levels=levels, solver=config)
        else:
            fc = PackedForecast.empty(len(self.channels), levels, 0)
        keys = [table.keys[int(p)] for p in checked.positions]
        failed = np.flatnonzero(fc.status != Status.OK)
        if failed.size and on_error == "raise":
            raise SolverFailed([keys[int(i)] for i in failed], Status(int(fc.status[failed[0]])).describe())
        for i in failed.tolist():
            why = Status(int(fc.status[i])).describe()
            refused.append({"id": keys[i], "field": "forecast", "msg": why})
        if on_error == "nan":
            q = fc.query_offsets
            for i in failed.tolist():
                fc.point[q[i] : q[i + 1]] = np.nan
                fc.mean[q[i] : q[i + 1]] = np.nan
                fc.quantiles[:, q[i] : q[i + 1]] = np.nan
            answered = np.arange(len(fc))
        else:
            answered = np.flatnonzero(fc.status == Status.OK)
        notes = [self._note(w, table.keys, time_col) for w in checked.warnings]
        notes += self._unusual_answers(fc, keys)
        fc = fc.select(answered)
        rows = checked.positions[answered]
        kept_q = np.concatenate([np.arange(q_off[p], q_off[p + 1]) for p in rows.tolist()] or [np.zeros(0, int)])
        out = to_frame(
            [table.keys[p] for p in rows.tolist()],
            fc.query_offsets,
            Times(queries.values[kept_q], queries.is_datetime),
            self.channels,
            fc.point,
            fc.mean,
            fc.quantiles,
            levels,
            id_col,
            time_col,
        )
        out = note_solver(out, config.used(), [table.keys[p] for p in rows.tolist()], fc.nfe)
        missing = [c for c in self.channels if c not in obs.columns]
        absent_inputs = [c for c in spec.columns if c not in obs.columns]
        if absent_inputs:
            notes.insert(
                0,
                {
                    "id": None,
                    "field": "columns",
                    "msg": f"inputs not in the table, forecast as none known: {', '.join(absent_inputs)} (events: "
                    "no event past or planned; static: the training mean)",
                    "kind": "missing_inputs",
                },
            )
        if missing:
            notes.insert(
                0,
                {
                    "id": None,
                    "field": "columns",
                    "msg": f"channels not in the table, forecast as never observed: {', '.join(missing)}",
                    "kind": "missing_channels",
                },
            )
        return note_outcome(out, sorted(refused, key=lambda e: str(e["id"])) if refused else [], notes)

    def _note(self, issue: Issue, keys: Sequence[Any], time_col: str) -> dict[str, Any]:
        """An `Issue` in the in-process API's terms: the series' id, the column or field, the message
        naming the Model argument behind a limit."""
        field = {"timestamps": time_col}.get(issue.field, issue.field)
        where = f"{field}[{issue.index}]" if issue.index is not None else field
        knob = (
            {
                "max_horizon": "Model(max_horizon_factor=...) or None",
                "unusual_scales": "Model(unusual_value_scales=...); refused as warnings_as_errors=True",
                "strict": "refused as Model(warnings_as_errors=True)",
            }.get(issue.setting or "")
            if issue.kind == "invalid"
            else None
        )
        msg = f"{where}: {issue.msg}" + (f" ({knob})" if knob else "")
        return {"id": keys[issue.series], "field": issue.field, "msg": msg, "kind": issue.kind}

    def _unusual_answers(self, fc: PackedForecast, keys: Sequence[Any]) -> list[dict[str, Any]]:
        unit, centre = self.bundle.normalizer.scale_words()
        out = []
        for i in np.flatnonzero((fc.far > self.unusual_output_scales) & (fc.status == Status.OK)).tolist():
            channel = self.channels[int(fc.far_channel[i])]
            msg = (
                f"the answer for channel {channel!r} lies {fc.far[i]:.3g} {unit} from {centre}, beyond "
                f"{self.unusual_output_scales:g} (Model(unusual_output_scales=...)): an extrapolation far from "
                "the training data"
            )
            out.append({"id": keys[i], "field": "forecast", "msg": msg, "kind": "unusual_forecast"})
        return out

    def _unit(self, times: Times, what: str) -> np.ndarray:
        """Times → the model's time unit (numbers are taken as already in it)."""
        if not times.is_datetime:
            return times.values
        if self.bundle.time.unit == "unitless":
            raise DataError(f"{what}: model {self.name!r} takes numeric times, not date-times")
        return to_unit(times.values, self.bundle.time.unit)

    def backtest(
        self,
        obs: pd.DataFrame,
        task: Literal["last", "half"] = "last",
        id_col: str = "id",
        time_col: str = "time",
        future_inputs: bool = True,
    ) -> Backtest:
        """Hold out each series' last point (task "last") or the second half of its points ("half"),
        forecast them from the rest, and score the forecasts beside LOCF and a linear trend: NMSE, MAE,
        CRPS and 50/80/95% coverage per channel on the data's scale (`latentcast.backtest`). A model with
        events is given the events after the cut too (the plan), unless `future_inputs=False`."""
        from latentcast.backtest import backtest

        with warnings.catch_warnings():  # the held-out predictions' warnings are not the user's question
            warnings.simplefilter("ignore", LatentcastWarning)
            return backtest(self, obs, task, id_col, time_col, future_inputs=future_inputs)

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint (loads again with `latentcast.load(path)` or `latentcast serve --model`)."""
        return self.bundle.save(path)


class SolverFailed(RuntimeError):
    """The solver could not forecast some series; `series` names them (Model.predict(on_error="skip")
    returns the others; on_error="nan" keeps these as NaN rows)."""

    def __init__(self, series: list[Any], reason: str):
        self.series = series
        shown = ", ".join(map(repr, series[:5])) + (" …" if len(series) > 5 else "")
        super().__init__(f"no forecast for series {shown}: {reason}")


class Refused(DataError):
    """Series the model cannot represent; `errors` lists every one (id, field, msg), `series` their ids.
    Model.predict(on_error="skip") answers the others."""

    def __init__(self, errors: list[dict[str, Any]], n_series: int):
        self.errors = errors
        self.series = [e["id"] for e in errors]
        first = errors[0]
        head = f"series {first['id']!r}: {first['msg']}"
        if len(errors) > 1 or n_series > 1:
            head = f"{len(errors)} of {n_series} series refused (on_error='skip' answers the others); the first: {head}"
        super().__init__(head)


def load(name_or_path: str | Path, device: str = "auto", **kwargs: Any) -> Model:
    """An embedded model by name ("pbcseq", "physionet2012", "spirals") or a checkpoint file; `kwargs` go to
    `Model`."""
    return Model(ModelBundle.load(name_or_path, resolve_device(device)), device, **kwargs)


def fit(
    obs: pd.DataFrame,
    channels: Sequence[str],
    *,
    events: Sequence[str] = (),
    static: Sequence[str] = (),
    levels: Sequence[str] = (),
    time_unit: str | None = None,
    time_scale: float | None = None,
    log_channels: Sequence[str] | None = None,
    bounds: Mapping[str, Sequence[float]] | None = None,
    missing_values: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    name: str = "model",
    epochs: int | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    quiet: bool = False,
    progress: bool | None = None,
    id_col: str = "id",
    time_col: str = "time",
) -> Model:
    """Train a latent ODE on a long table (what `latentcast train --data FILE` does) and return the best
    model by validation forecast error.

    time_unit: the unit of numeric times (second, minute, hour, day, week, year, or unitless), required for
    them; date-times: chosen from the data when None (the largest of second, minute, hour, day in which
    the median series spans at least 2). The series are split by id into train/validation/test
    (80/10/10, seeded). time_scale and
    log_channels None: chosen from the training series (as `latentcast train` does). bounds: channel →
    (lower, upper), the values a measurement can take (±inf: none); missing_values: markers meaning
    "unknown", for every channel (a list) or per channel (a mapping). Both are stored in the model.
    `config`: a TOML/JSON file or a dict overriding the default recipe (models/training/configs/default.toml), e.g.
    {"model": {"latent_dim": 16}, "train": {"batch_size": 32}}. `out`: keep the run directory
    (best.pt, last.pt, metrics.json); by default it is temporary. events, static: input columns
    (`latentcast.models.inputs`): event values at the times they happen (doses: rows carrying only them
    are events, not observations) and one value per series (age, weight); a forecast then takes them
    the same way, future events as rows after the last observation. levels: input columns whose value
    holds until their next value (an infusion rate; a row carrying only them is a change). A progress
    bar shows each epoch on stderr (`quiet=True`: none; `progress` is its former, opposite switch).
    """
    overrides = dict(config) if isinstance(config, Mapping) else {}
    data = {
        "name": name,
        "channels": list(channels),
        "events": list(events),
        "static": list(static),
        "levels": list(levels),
        "log_channels": list(log_channels) if log_channels is not None else None,
        "time_unit": time_unit,
        "time_scale": time_scale,
        "bounds": dict(bounds) if bounds is not None else None,
        "missing_values": (dict(missing_values) if isinstance(missing_values, Mapping) else {"*": list(missing_values)})
        if missing_values is not None
        else None,
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
        show = not quiet if progress is None else progress
        result = train_model(exp, split, run, device=device, show_progress=show)
        return Model(ModelBundle.load(result.best, resolve_device(device)), device)
