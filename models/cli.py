"""`latentcast` command line: train and evaluate models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Latent-ODE forecasts for irregular time series.")

_BUILTIN = {"spirals": "spirals", "pbcseq": "pbcseq"}


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option(help="spirals, pbcseq, or a CSV/parquet long table (id, time, channels)")],
    out: Annotated[Path, typer.Option(help="run directory: best.pt, last.pt, metrics.json, validation.png")],
    config: Annotated[Path | None, typer.Option(help="TOML/JSON overriding the data set's recipe")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    adjoint: Annotated[bool, typer.Option(help="train with torchdiffeq's adjoint (memory O(1) in steps)")] = False,
    seed: Annotated[int | None, typer.Option(help="training seed")] = None,
    epochs: Annotated[int | None, typer.Option(help="override the number of epochs")] = None,
    channels: Annotated[str | None, typer.Option(help="for a user file: channel columns, comma-separated")] = None,
    log_channels: Annotated[str | None, typer.Option(help="channels to model on a log scale")] = None,
    time_unit: Annotated[str | None, typer.Option(help="unit of numeric times / unit date-times become")] = None,
    time_scale: Annotated[float | None, typer.Option(help="model time = time in unit × scale")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue from a run's last.pt")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a latent ODE; keeps the best checkpoint by validation forecast error."""
    from models.datasets import load_dataset
    from models.evaluate import build_experiment
    from models.train import experiment_from_checkpoint, train

    _logging()
    if resume is not None:
        exp = experiment_from_checkpoint(resume)
        if epochs:
            exp = _with(exp, train={"epochs": epochs})
    else:
        data_values: dict[str, Any] = {}
        if data not in _BUILTIN:
            data_values = {
                "name": data,
                "channels": _split_list(channels),
                "log_channels": _split_list(log_channels),
                "time_unit": time_unit,
                "time_scale": time_scale,
            }
        exp = build_experiment(
            _BUILTIN.get(data, "default"),
            config,
            data={k: v for k, v in data_values.items() if v is not None},
            train={k: v for k, v in {"seed": seed, "epochs": epochs}.items() if v is not None},
            model={"solver": {"adjoint": True}} if adjoint else {},
        )
    result = train(exp, load_dataset(exp.data), out, device=device, resume=resume, show_progress=not quiet)
    if not result.metrics:  # a rank other than 0 under torchrun: rank 0 reports and writes
        return
    best = result.metrics["best"]
    typer.echo(f"best epoch {best.get('epoch')}: val nmse {best.get('val_nmse', float('nan')):.4f} -> {result.best}")


@app.command("evaluate")
def evaluate_cmd(
    task: Annotated[str, typer.Argument(help="spirals (Chen et al. 2018, Table 2) or pbcseq")],
    checkpoint: Annotated[Path | None, typer.Option(help="pbcseq: the model to evaluate")] = None,
    runs: Annotated[Path, typer.Option(help="spirals: where the two models are (or get) trained")] = Path(
        "runs/spirals"
    ),
    out: Annotated[Path, typer.Option(help="where the Markdown and JSON tables go")] = Path("bench/results"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    retrain: Annotated[bool, typer.Option(help="spirals: train both models even if checkpoints exist")] = False,
    epochs: Annotated[int | None, typer.Option(help="spirals: override training epochs")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Reproduce a paper table or evaluate on held-out data; writes OUT/TASK.md and OUT/TASK.json."""
    from models.evaluate import evaluate_pbcseq, evaluate_spirals

    _logging()
    if task == "spirals":
        evaluate_spirals(runs, out, device, retrain, epochs, show_progress=not quiet)
    elif task == "pbcseq":
        if checkpoint is None:
            raise typer.BadParameter("pbcseq needs --checkpoint (e.g. runs/pbcseq/best.pt)")
        evaluate_pbcseq(checkpoint, out, device)
    else:
        raise typer.BadParameter(f"unknown task {task!r}; choose spirals or pbcseq")
    typer.echo((out / f"{task}.md").read_text())


def _with(exp: Any, **sections: dict[str, Any]) -> Any:
    from models.config import ExperimentConfig, from_dict, merge, to_dict

    return from_dict(ExperimentConfig, merge(to_dict(exp), sections))


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
