"""`latentcast` command line: train, evaluate (from models), serve and forecast (HTTP client)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from models.cli import evaluate_cmd, train_cmd

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Latent-ODE forecasts for irregular time series: train, evaluate, serve, forecast.",
)
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (LATENTCAST_HOST, default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (LATENTCAST_PORT, default 8000)")] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(help="checkpoint to serve; repeat for more (default: the embedded spirals and pbcseq models)"),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (LATENTCAST_DEVICE)")] = None,
) -> None:
    """Serve forecasts over HTTP (uvicorn). Every other setting comes from LATENTCAST_* variables."""
    import uvicorn

    from service.config import Settings
    from service.main import create_app

    overrides: dict[str, Any] = {
        k: v
        for k, v in {"host": host, "port": port, "device": device, "models": model or None}.items()
        if v is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        workers=1,
    )


@app.command("forecast")
def forecast(
    url: Annotated[str, typer.Option(help="server, e.g. http://127.0.0.1:8000")],
    input: Annotated[Path, typer.Option(help="long table (CSV/parquet): id, time, one column per channel")],
    query_times: Annotated[
        str, typer.Option(help="comma-separated times for every series, or a CSV with columns id,time")
    ],
    output: Annotated[Path | None, typer.Option(help="CSV to write (default: stdout)")] = None,
    plot: Annotated[Path | None, typer.Option(help="also write a PNG fan chart")] = None,
    model: Annotated[str | None, typer.Option(help="model name (default: the server's default)")] = None,
    quantiles: Annotated[str, typer.Option(help="comma-separated levels")] = "0.1,0.5,0.9",
    api_key: Annotated[
        str | None, typer.Option(envvar="LATENTCAST_API_KEY", help="API key if the server wants one")
    ] = None,
) -> None:
    """Forecast a long table through a running server; writes a long CSV (id, time, channel, mean, q…)."""
    import pandas as pd

    from models import read_long_table
    from service.client import LatentcastClient, LatentcastError

    obs = read_long_table(input)
    qpath = Path(query_times)
    queries: Any
    if qpath.suffix in (".csv", ".gz") and qpath.exists():
        qt = pd.read_csv(qpath)
        queries = {sid: list(g["time"]) for sid, g in qt.groupby(qt["id"].astype(str))}
        obs = obs.assign(id=obs["id"].astype(str))
    else:
        parts = [p.strip() for p in query_times.split(",") if p.strip()]
        try:
            queries = [float(p) for p in parts]
        except ValueError:
            queries = parts
    levels = [float(q) for q in quantiles.split(",") if q.strip()]
    with LatentcastClient(url, api_key=api_key) as client:
        try:
            fc = client.forecast(obs, queries, model=model, quantiles=levels)
        except LatentcastError as exc:
            typer.echo(f"error {exc.status}: {exc.detail}", err=True)
            raise typer.Exit(1) from exc
    if output is None:
        fc.to_csv(sys.stdout, index=False)
    else:
        fc.to_csv(output, index=False)
        typer.echo(f"wrote {len(fc)} rows to {output}", err=True)
    if plot is not None:
        from service.fanchart import fan_chart

        fan_chart(obs, fc, plot)
        typer.echo(f"wrote {plot}", err=True)


def main() -> None:
    app()
