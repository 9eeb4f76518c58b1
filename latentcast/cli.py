"""`latentcast` command line: train and backtest models, serve them over HTTP, forecast through a server."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: the rich panels print flags as "<bool>"
    help="Latent-ODE forecasts for irregular time series: train, backtest, serve, forecast.",
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="on an error, print the traceback (anywhere on the line)")
    ] = False,
) -> None:
    """Latent-ODE forecasts for irregular time series: train, backtest, serve, forecast."""


_BUILTIN = {"spirals": "spirals", "pbcseq": "pbcseq", "physionet2012": "physionet2012"}


def _builtin(data: str) -> str | None:
    """The recipe of a built-in data set: "pbcseq", or "physionet2012" also as physionet2012:PATH."""
    return _BUILTIN.get(data.split(":", 1)[0] if data.startswith("physionet2012") else data)


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("train")
def train_cmd(
    data: Annotated[
        str,
        typer.Option(help="spirals, pbcseq, physionet2012[:PATH], or a CSV/parquet long table (id, time, channels)"),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="run directory: best.pt, last.pt, metrics.json, validation.png [default: runs/NAME]"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="the model's name, as a server serves it (default: the data set, or the file's name)"),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML/JSON overriding the data set's recipe")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    adjoint: Annotated[
        bool, typer.Option("--adjoint", help="train with torchdiffeq's adjoint (memory O(1) in steps)")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="training seed")] = None,
    epochs: Annotated[int | None, typer.Option(help="override the number of epochs")] = None,
    channels: Annotated[str | None, typer.Option(help="for a user file: channel columns, comma-separated")] = None,
    events: Annotated[
        str | None,
        typer.Option(
            help="for a user file: event columns (doses, treatments: a value at the time it happens), comma-separated;"
            " a row with only event values is an event, not an observation"
        ),
    ] = None,
    static: Annotated[
        str | None,
        typer.Option(help="for a user file: static covariate columns (one value per series), comma-separated"),
    ] = None,
    levels: Annotated[
        str | None,
        typer.Option(
            help="for a user file: input columns whose value holds until their next value (an infusion rate), "
            "comma-separated; a row with only input values is a change, not an observation"
        ),
    ] = None,
    log_channels: Annotated[
        str | None, typer.Option(help="channels to model on a log scale (default: chosen from the data)")
    ] = None,
    no_log_channels: Annotated[
        bool, typer.Option("--no-log-channels", help="model every channel on its own scale")
    ] = False,
    time_unit: Annotated[
        str | None,
        typer.Option(
            help="unit of numeric times, required for them: second, minute, hour, day, week, year or unitless "
            "(date-times: chosen from the data)"
        ),
    ] = None,
    time_scale: Annotated[
        float | None, typer.Option(help="model time = time in unit × scale (default: chosen from the data)")
    ] = None,
    bounds: Annotated[
        str | None,
        typer.Option(
            help="physical bounds per channel, e.g. 'pH=6.3:10,HR=0:' (an empty side: none); values outside "
            "are set aside in training and serving, forecasts clipped to them"
        ),
    ] = None,
    missing_values: Annotated[
        str | None,
        typer.Option(
            help="values that mean 'unknown': '--missing-values=-1,999' for every channel, or 'Height=-1,Weight=-1|0'"
        ),
    ] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop after this much training time")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue from a run's last.pt")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train a latent ODE; keeps the best checkpoint by validation forecast error, then reports it against
    last-observation-carried-forward and a linear trend on the validation series."""
    from latentcast.models.training.datasets import load_dataset
    from latentcast.models.training.recipes import build_experiment
    from latentcast.models.training.report import format_report
    from latentcast.models.training.train import CONSOLE, experiment_from_checkpoint, train
    from latentcast.models.validity import parse_bounds, parse_missing_values

    _logging(None if quiet else CONSOLE)
    if resume is not None:
        exp = experiment_from_checkpoint(resume)
        if epochs:
            exp = _with(exp, train={"epochs": epochs})
    else:
        data_values: dict[str, Any] = {"name": data} if ":" in data else {}  # a built-in's own path
        if _builtin(data) is None:
            data_values = {
                "name": data,
                "channels": _split_list(channels),
                "events": _split_list(events),
                "static": _split_list(static),
                "levels": _split_list(levels),
                "log_channels": [] if no_log_channels else _split_list(log_channels),
                "time_unit": time_unit,
                "time_scale": time_scale,
            }
        if bounds is not None:
            data_values["bounds"] = parse_bounds(bounds)
        if missing_values is not None:
            data_values["missing_values"] = parse_missing_values(missing_values)
        exp = build_experiment(
            _builtin(data) or "default",
            config,
            data={k: v for k, v in data_values.items() if v is not None},
            train={
                k: v for k, v in {"seed": seed, "epochs": epochs, "max_minutes": max_minutes}.items() if v is not None
            },
            model={"solver": {"adjoint": True}} if adjoint else {},
        )
    split = load_dataset(exp.data)
    if name is not None:
        split = dataclasses.replace(split, description={**split.description, "name": name})
    model_name = str(split.description.get("name", "model"))
    if out is None:
        out = resume.parent if resume is not None else Path("runs") / model_name
        typer.echo(f"run directory: {out}", err=True)
    result = train(exp, split, out, device=device, resume=resume, show_progress=not quiet)
    if not result.metrics:  # a rank other than 0 under torchrun: rank 0 reports and writes
        return
    best = result.metrics["best"]
    if result.metrics.get("report"):
        typer.echo(format_report(result.metrics["report"]))
    stopped = result.metrics.get("stopped_early")
    if best.get("cross_validated"):
        typer.echo(
            f"{best['cross_validated']}-fold cross-validation chose {best.get('epoch')} epochs; trained on every "
            f"training and validation series: out-of-fold val nmse {best.get('val_nmse', float('nan')):.4f} -> "
            f"{result.best}"
        )
        return
    typer.echo(
        f"best epoch {best.get('epoch')}: val nmse {best.get('val_nmse', float('nan')):.4f} -> {result.best}"
        + (f" (stopped early: {stopped})" if stopped else "")
    )


@app.command("backtest")
def backtest_cmd(
    data: Annotated[
        str,
        typer.Option(
            help="a long table (CSV/parquet): id, time, the model's channels; or a built-in data set (pbcseq, "
            "physionet2012[:PATH], spirals: its test split)"
        ),
    ],
    model: Annotated[str, typer.Option(help="an embedded model (pbcseq, physionet2012, spirals) or a checkpoint")],
    task: Annotated[str, typer.Option(help="last: hold out each series' last point; half: its second half")] = "last",
    out: Annotated[
        Path | None,
        typer.Option(help="where to write scores.csv, forecasts.csv, backtest.png [default: runs/backtest_MODEL]"),
    ] = None,
    series: Annotated[str | None, typer.Option(help="comma-separated ids to draw (default: the first 6)")] = None,
    unseen: Annotated[
        bool, typer.Option("--unseen", help="score only the series the model was neither trained nor validated on")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Score a model on your own series: hold out each series' last point (or second half), forecast it
    from the rest, and compare with LOCF and a linear trend (NMSE, MAE, CRPS, 50/80/95% coverage)."""
    import warnings

    import pandas as pd
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    import latentcast
    from latentcast.backtest import TASKS, backtest, builtin_table, unseen_series
    from latentcast.frames import LatentcastWarning, read_long_table

    if task not in TASKS:
        raise typer.BadParameter(f"{task!r} is not one of {', '.join(TASKS)}", param_hint="--task")
    fitted = latentcast.load(model, device=device)
    obs = builtin_table(data) if _builtin(data) is not None else read_long_table(Path(data))
    if unseen:
        obs = unseen_series(fitted, obs)
    bar = Progress(TextColumn("forecasting held-out points"), BarColumn(), MofNCompleteColumn(), disable=quiet)
    with bar, warnings.catch_warnings():
        warnings.simplefilter("ignore", LatentcastWarning)
        job = bar.add_task("series", total=None)
        result = backtest(fitted, obs, task, on_chunk=lambda done, total: bar.update(job, completed=done, total=total))
    out = out or Path("runs") / f"backtest_{fitted.name}"
    out.mkdir(parents=True, exist_ok=True)
    result.scores.to_csv(out / "scores.csv", index=False)
    result.forecasts.to_csv(out / "forecasts.csv", index=False)
    typer.echo(result.summary())
    try:
        numeric = pd.api.types.is_numeric_dtype(obs["time"]) and fitted.time_unit != "unitless"
        png = result.plot(
            out / "backtest.png", obs, series=_split_list(series), time_unit=fitted.time_unit if numeric else None
        )
        typer.echo(f"wrote {out / 'scores.csv'}, {out / 'forecasts.csv'}, {png}", err=True)
    except ImportError:
        typer.echo(
            f"wrote {out / 'scores.csv'}, {out / 'forecasts.csv'} (install latentcast[plot] for the PNG)", err=True
        )


app.command("evaluate", help="The same as backtest (the repository's result tables: python -m bench.evaluate).")(
    backtest_cmd
)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (LATENTCAST_HOST, default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (LATENTCAST_PORT, default 8000)")] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            help="checkpoint to serve; repeat for more (default: the embedded models: spirals, pbcseq, physionet2012)"
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (LATENTCAST_DEVICE)")] = None,
) -> None:
    """Serve forecasts over HTTP (uvicorn). Every other setting comes from LATENTCAST_* variables."""
    try:
        from pydantic import ValidationError

        from latentcast.service import Settings, server
    except ImportError as exc:
        typer.echo(f"serving needs the [serve] extra: pip install 'latentcast[serve]' ({exc})", err=True)
        raise typer.Exit(2) from exc

    overrides: dict[str, Any] = {
        k: v
        for k, v in {"host": host, "port": port, "device": device, "models": model or None}.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # one line per bad setting, naming it
        for e in exc.errors(include_url=False):
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            typer.echo(f"latentcast serve: LATENTCAST_{where.upper()}: {e['msg']}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    raise typer.Exit(server.run(settings))


@app.command("forecast")
def forecast(
    input: Annotated[
        Path,
        typer.Option(
            help="long table (CSV/parquet): id, time, one column per channel (and per event or static input the "
            "model takes; rows with only event values are events, planned ones after the history); with "
            "--engine ray a parquet directory"
        ),
    ],
    query_times: Annotated[
        str, typer.Option(help="comma-separated times for every series, or a CSV/parquet file with columns id,time")
    ],
    url: Annotated[str | None, typer.Option(help="server, e.g. http://127.0.0.1:8000 (the server engine)")] = None,
    engine: Annotated[
        str, typer.Option(help="server: through a running server (--url); ray: on a Ray cluster, in place")
    ] = "server",
    address: Annotated[
        str | None, typer.Option(help="ray: the cluster to join (auto, ray://host:10001; default: a local one)")
    ] = None,
    workers: Annotated[int, typer.Option(help="ray: actors, each loading the model once")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="ray: GPUs per actor (0: forecast on CPUs)")] = 0.0,
    output: Annotated[
        Path | None, typer.Option(help="CSV to write (default: stdout); with --engine ray the directory to write")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="also write a PNG fan chart (the first 6 series, or --series)")
    ] = None,
    series: Annotated[str | None, typer.Option(help="comma-separated ids to draw in --plot")] = None,
    actuals: Annotated[
        Path | None, typer.Option(help="a long table of the values that happened, drawn in --plot beside the forecast")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="model name (default: the server's default); with --engine ray a name or a checkpoint"),
    ] = None,
    quantiles: Annotated[str, typer.Option(help="comma-separated levels")] = "0.1,0.5,0.9",
    api_key: Annotated[
        str | None, typer.Option(envvar="LATENTCAST_API_KEY", help="API key if the server wants one")
    ] = None,
    solver: Annotated[
        str | None, typer.Option(help="accuracy level: fast, default (the model's own) or precise")
    ] = None,
    rtol: Annotated[float | None, typer.Option(help="solver relative tolerance (wins over --solver's)")] = None,
    atol: Annotated[float | None, typer.Option(help="solver absolute tolerance (wins over --solver's)")] = None,
    on_error: Annotated[
        str,
        typer.Option(
            help="raise: any refused series fails the run; skip: forecast the others, list the rest "
            "(--engine ray always skips: refused series go to OUTPUT/errors)"
        ),
    ] = "raise",
    extra_columns: Annotated[
        str, typer.Option(help="error: a column that is not id, time or a channel stops the run; ignore: drop it")
    ] = "error",
) -> None:
    """Forecast a long table through a running server; writes a long CSV (id, time, channel, point, mean, q…;
    `point` is the forecast to use: the median on log channels, the mean elsewhere).
    Reports on stderr the solver settings the server used and the evaluations they took, the warnings,
    and (with --on-error skip) each refused series."""
    import warnings

    if engine not in ("server", "ray"):
        raise typer.BadParameter(f"{engine!r} is not one of server, ray", param_hint="--engine")
    if engine == "ray":
        _forecast_on_ray(input, output, model, query_times, quantiles, address, workers, gpus_per_worker, solver)
        return
    if url is None:
        raise typer.BadParameter("the server engine needs --url (or use --engine ray)", param_hint="--url")
    try:
        from latentcast.client import LatentcastClient, LatentcastError, read_long_table
    except ImportError as exc:
        typer.echo(f"forecasting through a server needs the [client] extra: pip install 'latentcast[client]' ({exc})")
        raise typer.Exit(2) from exc
    from latentcast.frames import LatentcastWarning

    if plot is not None:  # before any work: a missing plotting library should not cost a forecast
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            typer.echo(f"--plot needs matplotlib: pip install 'latentcast[plot]' ({exc})", err=True)
            raise typer.Exit(2) from exc
    for name, value, allowed in (
        ("--on-error", on_error, ("raise", "skip")),
        ("--extra-columns", extra_columns, ("error", "ignore")),
    ):
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=name)
    obs = read_long_table(input)
    queries: Any
    if query_times.strip().lower().endswith((".csv", ".csv.gz", ".parquet")):  # a table of id, time
        qt = read_long_table(Path(query_times.strip()))
        queries = {sid: list(g["time"]) for sid, g in qt.groupby(qt["id"])}
    else:
        queries = _time_list(query_times)
    levels = [float(q) for q in quantiles.split(",") if q.strip()]
    if solver not in (None, "fast", "default", "precise"):
        raise typer.BadParameter(f"{solver!r} is not one of fast, default, precise", param_hint="--solver")
    level = cast(Literal["fast", "default", "precise"] | None, solver)
    with LatentcastClient(url, api_key=api_key) as client:
        unit = client.model_info(model).get("time_unit") if plot is not None else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LatentcastWarning)  # listed below, one line each
                fc = client.forecast(
                    obs,
                    queries,
                    model=model,
                    quantiles=levels,
                    solver=level,
                    rtol=rtol,
                    atol=atol,
                    on_error=cast(Literal["raise", "skip"], on_error),
                    extra_columns=cast(Literal["error", "ignore"], extra_columns),
                )
        except LatentcastError as exc:
            detail = str(exc.detail).replace("send on_error=skip", "pass --on-error skip")
            typer.echo(f"error {exc.status}: {detail}", err=True)
            for item in (exc.body or {}).get("errors", [])[1:10] if isinstance(exc.body, dict) else []:
                typer.echo(f"  series {item.get('series_id')!r}: {item.get('msg')}", err=True)
            raise typer.Exit(1) from exc
    for kind, items in (("warning", fc.attrs.get("warnings", [])), ("refused", fc.attrs.get("errors", []))):
        for item in items[:20]:
            where = f"series {item['id']!r}: " if item.get("id") is not None else ""
            typer.echo(f"{kind}: {where}{item['msg']}", err=True)
        if len(items) > 20:
            typer.echo(f"{kind}: … and {len(items) - 20} more", err=True)
    used, nfe = fc.attrs.get("solver", {}), list(fc.attrs.get("nfe", {}).values())
    if used and nfe:
        typer.echo(
            f"solver {used['method']} rtol {used['rtol']:g} atol {used['atol']:g}: "
            f"{sum(nfe) / len(nfe):.1f} evaluations per trajectory (mean of {len(nfe)} series, max {max(nfe):g})",
            err=True,
        )
    if fc.empty and fc.attrs.get("errors"):
        typer.echo(f"every one of the {len(fc.attrs['errors'])} series was refused: nothing to write", err=True)
        raise typer.Exit(1)
    if output is None:
        fc.to_csv(sys.stdout, index=False)
    else:
        fc.to_csv(output, index=False)
        typer.echo(f"wrote {len(fc)} rows to {output}", err=True)
    if plot is not None:
        from latentcast.fanchart import chosen_series, fan_chart

        wanted = _split_list(series)
        drawn = chosen_series(fc, wanted, 6)
        truth = read_long_table(actuals) if actuals is not None else None
        dates = fc["time"].map(lambda v: isinstance(v, str)).any() if len(fc) else False
        fan_chart(obs, fc, plot, series=drawn, actuals=truth, time_unit=None if dates or unit == "unitless" else unit)
        total = fc["id"].astype(str).nunique()
        how = "" if wanted else f" (the first {len(drawn)} of {total}; --series to choose)"
        typer.echo(f"wrote {plot}: series {', '.join(drawn)}{how}", err=True)


def _time_list(text: str) -> list[float] | list[str]:
    """--query-times as typed: comma-separated numbers (the model's time unit), else date-times."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return [float(p) for p in parts]
    except ValueError:
        return parts


def _forecast_on_ray(
    input: Path,
    output: Path | None,
    model: str | None,
    query_times: str,
    quantiles: str,
    address: str | None,
    workers: int,
    gpus: float,
    solver: str | None,
) -> None:
    """`forecast --engine ray`: the whole table on Ray Data (`latentcast.batch.forecast_table`)."""
    try:
        from latentcast.batch import forecast_table
    except ImportError as exc:
        typer.echo(f"--engine ray needs the [ray] extra: pip install 'latentcast[ray]' ({exc})", err=True)
        raise typer.Exit(2) from exc
    if output is None or model is None:
        raise typer.BadParameter("--engine ray needs --output DIR and --model NAME|CHECKPOINT", param_hint="--output")
    if solver not in (None, "fast", "default", "precise"):
        raise typer.BadParameter(f"{solver!r} is not one of fast, default, precise", param_hint="--solver")
    text = query_times.strip()
    queries: Any = Path(text)
    if not text.lower().endswith(".parquet") and not Path(text).is_dir():
        queries = _time_list(text)
    summary, _ = forecast_table(
        input,
        output,
        model,
        queries,
        quantiles=[float(q) for q in quantiles.split(",") if q.strip()],
        concurrency=workers,
        num_gpus=gpus,
        solver=solver,
        address=address,
    )
    typer.echo(f"{summary}; wrote {output}/forecasts, {output}/errors, {output}/warnings", err=True)
    if summary.answered == 0 and summary.refused:
        typer.echo(f"every one of the {summary.refused} series was refused (see {output}/errors)", err=True)
        raise typer.Exit(1)


def _with(exp: Any, **sections: dict[str, Any]) -> Any:
    from latentcast.models.config import ExperimentConfig, from_dict, merge, to_dict

    return from_dict(ExperimentConfig, merge(to_dict(exp), sections))


def _logging(console: Any = None) -> None:
    """Log records at INFO; with a rich `console` (a training's progress bar), printed above its bar."""
    if console is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler])


def main() -> None:
    """Run the CLI. An error ends it with one line and exit status 1; `--debug` (anywhere on the line)
    shows the traceback instead."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        typer.echo(f"latentcast: error: {type(exc).__name__}: {first} (--debug shows the traceback)", err=True)
        sys.exit(1)
