"""Training: ELBO (or IWAE) with Adam and cosine decay, validation every epoch, best and last
checkpoints, resumable, a metrics JSON and a PNG of validation forecasts.

Randomness is derived from (seed, epoch), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from latentcast.models.checkpoint import ModelBundle, build_model, load_checkpoint, read_payload, save_checkpoint
from latentcast.models.config import ExperimentConfig, from_dict, to_dict
from latentcast.models.data import DataError, Normalizer, collate, random_contexts, random_windows
from latentcast.models.device import resolve_device
from latentcast.models.latent_ode import LatentODE
from latentcast.models.rnn_baseline import RNNBaseline
from latentcast.models.training import distributed
from latentcast.models.training.artifacts import BEST, FOLDS, LAST, METRICS, RANKS, plot_best, write_metrics
from latentcast.models.training.calibrate import MIN_VALUES as CALIBRATION_VALUES
from latentcast.models.training.calibrate import Calibration
from latentcast.models.training.crossval import choose_epochs, fold_splits, pooled_report, score, sized_validation
from latentcast.models.training.datasets import DatasetSplit
from latentcast.models.training.preprocess import MAX_EXAMPLES, apply_validity, drop_outliers, suspect_codes
from latentcast.models.training.report import training_report, validation_warnings, with_report
from latentcast.models.training.schedule import batch_indices, channel_weights, kl_weight, lr_at
from latentcast.models.training.validation import validate
from latentcast.models.validity import Validity

__all__ = ["BEST", "FOLDS", "LAST", "METRICS", "RANKS", "TrainResult", "experiment_from_checkpoint", "train"]

log = logging.getLogger("latentcast.train")
# where the progress bar is drawn (stderr); a logging handler on it prints records above the bar
CONSOLE = Console(stderr=True)


@dataclasses.dataclass
class TrainResult:
    best: Path
    last: Path
    metrics: dict[str, Any]


MIN_SERIES, MIN_VAL_SERIES = 20, 2


def check_trainable(split: DatasetSplit) -> None:
    """Refuse data too small to learn dynamics from and to validate on: at least MIN_SERIES series with
    two or more observations (one point has no dynamics, and a model trained on no span would accept
    queries at any horizon), MIN_VAL_SERIES of them in the validation split."""
    usable = [sum(len(s) >= 2 for s in part) for part in (split.train, split.val, split.test)]
    name = split.description.get("name", "the data")
    if sum(usable) < MIN_SERIES:
        raise DataError(
            f"{name}: {sum(usable)} series with 2 or more observations; training needs at least {MIN_SERIES} (no "
            "setting lowers this: a latent ODE fitted to fewer series learns their noise). For a table this "
            "small, carry each series' last value forward or fit a line per series"
        )
    if usable[0] == 0 or usable[1] < MIN_VAL_SERIES:
        raise DataError(
            f"{name}: {sum(usable)} series with 2 or more observations (train {usable[0]}, validation "
            f"{usable[1]}, test {usable[2]}); training needs at least {MIN_SERIES}, with {MIN_VAL_SERIES} in "
            "validation: add series, or give validation a larger share (data.split)"
        )


class TrainingError(RuntimeError):
    """Training cannot go on; the message names the likely cause and the setting to change."""


def train(
    exp: ExperimentConfig,
    split: DatasetSplit,
    out_dir: str | Path,
    device: str = "auto",
    resume: str | Path | None = None,
    show_progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    out = Path(out_dir)
    check_trainable(split)  # before anything is written or cross-validated
    world = distributed.from_env()  # several processes under torchrun, else a world of one
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    dev = distributed.start(world, resolve_device(device))
    tc = exp.train
    split, sizing = sized_validation(
        split,
        tc.val_task,
        tc.min_val_points,
        tc.max_val_share,
        exp.data.split_seed,
        min_values=CALIBRATION_VALUES if tc.min_val_points else 0,  # 0: the split as given
    )
    note = sizing.describe(tc.min_val_points)
    try:
        small = len(split.train) + len(split.val) <= tc.cv_max_series
        if sizing.short and small and tc.folds and resume is None and not world.active:
            log.info("%s: choosing the epochs by %d-fold cross-validation", note, tc.folds)
            result = _cross_validated(exp, split, out, dev, world, show_progress, on_epoch, note)
        else:
            result = _train(exp, split, out, dev, world, resume, show_progress and world.main, on_epoch, note=note)
    except BaseException:
        distributed.stop(world, together=False)
        raise
    distributed.stop(world)
    return result


@dataclasses.dataclass
class _Run:
    """One run after its set-up: the split as the model sees it (bounds and outliers applied), the model,
    its optimiser and loss, where a resumed run left off, and what the report says of the data."""

    split: DatasetSplit
    validity: Validity
    normalizer: Normalizer
    model: LatentODE | RNNBaseline
    loss_fn: distributed.LossModule
    step_fn: torch.nn.Module
    opt: torch.optim.Optimizer
    channel_weight: torch.Tensor | None  # (D,)
    description: dict[str, Any]
    history: list[dict[str, Any]]
    best_score: float
    start_epoch: int
    outliers: dict[str, Any]
    out_of_bounds: dict[str, Any]
    codes: dict[str, Any]
    examples: tuple[list[Any], list[Any]]  # outliers to name in the report: (training's, validation's)

    def bundle(self, metrics: dict[str, Any]) -> ModelBundle:
        name = str(self.split.description.get("name", "model"))
        return ModelBundle(name, self.model, self.normalizer, self.split.time, self.description, metrics,
                           validity=self.validity)  # fmt: skip


def _setup(
    exp: ExperimentConfig, split: DatasetSplit, dev: torch.device, world: distributed.World, resume: str | Path | None
) -> _Run:
    """The split cleaned as the model will see it, the model, its optimiser and, when resuming, where the
    run left off."""
    tc = exp.train
    torch.manual_seed(tc.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    inputs = set(exp.data.static)  # a loader applies its statics' bounds and markers itself (physionet2012)
    bounds = {k: v for k, v in exp.data.bounds.items() if k not in inputs}
    marks = {k: v for k, v in exp.data.missing_values.items() if k not in inputs}
    validity = Validity.from_config(bounds, marks, split.channels, exp.data.bounds_source)
    valid_train, valid_val = apply_validity(split.train, validity), apply_validity(split.val, validity)
    split = dataclasses.replace(split, train=valid_train.series, val=valid_val.series)
    check_trainable(split)
    normalizer = Normalizer.fit(split.train, split.channels, split.log_channels, exp.data.normalize)
    codes = suspect_codes(split.train, normalizer)  # before the outlier rule sets them aside unnamed
    kept_train = drop_outliers(split.train, normalizer, exp.data.outlier_z)  # gross entry errors out
    kept_val = drop_outliers(split.val, normalizer, exp.data.outlier_z)
    split = dataclasses.replace(split, train=kept_train.series, val=kept_val.series)
    outliers = {"train": kept_train.outliers, "validation": kept_val.outliers}
    out_of_bounds = {"train": valid_train.outliers, "validation": valid_val.outliers}
    model = build_model(exp.model, len(split.channels), split.inputs).to(dev)
    weights = channel_weights(split.train, tc.channel_balance)
    cw = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=dev)  # (D,)
    loss_fn = distributed.LossModule(model)
    step_fn: torch.nn.Module = loss_fn
    if world.active:
        ids = [dev.index] if dev.type == "cuda" else None
        step_fn = torch.nn.parallel.DistributedDataParallel(loss_fn, device_ids=ids)
    std_params = [p for n, p in model.named_parameters() if n == "decoder.log_std"]
    others = [p for n, p in model.named_parameters() if n != "decoder.log_std"]
    groups = [{"params": others, "lr_scale": 1.0}]
    if std_params:
        groups.append({"params": std_params, "lr_scale": tc.std_lr_scale})
    opt = torch.optim.Adam(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    history: list[dict[str, Any]] = []
    best_score, start_epoch = math.inf, 0
    if resume is not None:
        payload = read_payload(resume)
        state = payload.get("train_state")
        if state is None:
            raise ValueError(f"{resume}: has no training state; resume from {LAST}, not {BEST}")
        model.load_state_dict(payload["state_dict"])
        opt.load_state_dict(state["optimizer"])
        history, best_score, start_epoch = (
            list(state["history"]),
            float(state["best_score"]),
            int(state["epoch"]),
        )
        log.info("resumed from %s at epoch %d", resume, start_epoch)
    description = dict(
        split.description,
        channels=list(split.channels),
        log_channels=list(split.log_channels),
        config=to_dict(exp.data),
        max_span=max(float(s.times[-1] - s.times[0]) for s in split.train),  # model time
        fitted_ids=sorted({s.id for s in [*split.train, *split.val]}),  # a backtest on them is in-sample
    )
    examples = (list(kept_train.examples), list(kept_val.examples))
    return _Run(split, validity, normalizer, model, loss_fn, step_fn, opt, cw, description, history, best_score,
                start_epoch, outliers, out_of_bounds, codes, examples)  # fmt: skip


@dataclasses.dataclass
class _Epoch:
    """What one epoch's steps did (this rank's)."""

    loss: float  # the mean step loss
    nfe: int
    skipped: int  # batches skipped for a solver failure
    seconds: float


def _epoch(
    run: _Run, exp: ExperimentConfig, epoch: int, dev: torch.device, world: distributed.World, steps: int,
    on_step: Callable[[float], None],
) -> _Epoch:  # fmt: skip
    """One epoch of optimiser steps over this rank's share of the shuffled training series; `on_step`
    gets the running mean loss after each step."""
    tc = exp.train
    split, model, opt = run.split, run.model, run.opt
    model.train()
    rng = np.random.default_rng([tc.seed, epoch])  # the permutation: the same on every rank
    ctx_rng = np.random.default_rng([tc.seed, epoch, world.rank]) if world.active else rng
    torch.manual_seed(tc.seed * 100_003 + epoch + 7_919 * world.rank)
    lr = lr_at(exp, epoch)
    for group in opt.param_groups:
        group["lr"] = lr * group["lr_scale"]
    lengths = np.array([len(s) for s in split.train])
    perm = np.asarray(list(distributed.shard(rng.permutation(len(split.train)), world)))  # this rank's share
    batches = batch_indices(perm, lengths, tc.batch_size, tc.length_pool, rng)
    run_loss, run_n, nfe, skipped, t0 = 0.0, 0, 0, 0, time.perf_counter()
    spans = [s.times[-1] - s.times[0] for s in split.train if len(s) > 1]
    max_span = tc.window_factor * float(np.median(spans)) if spans and tc.context == "random" else 0.0
    for step in range(steps):
        part = [split.train[i] for i in batches[step]]
        if max_span > 0:
            part = random_windows(part, max_span, ctx_rng)
        ctx = None if tc.context == "fixed" else random_contexts(part, tc.min_context, ctx_rng)
        batch = collate(part, run.normalizer, ctx, exp.model.anchor, split.inputs).to(dev)
        kl = kl_weight(exp, epoch + step / steps)
        loss, stats, ok = run.step_fn(
            batch, kl, tc.iwae_samples, tc.likelihood == "forecast", tc.max_target_times,
            channel_weight=run.channel_weight,
        )  # fmt: skip
        opt.zero_grad(set_to_none=True)
        ok = ok and bool(torch.isfinite(loss.detach()))  # a NaN loss would make every weight NaN
        if not distributed.all_ok(world, ok, dev):  # a solver failure on some rank: all skip
            if world.active:
                loss.backward()  # zero gradients, but every rank joins DDP's all-reduce
            log.warning("epoch %d step %d: skipped a batch: %s", epoch + 1, step, run.loss_fn.error)
            skipped += 1
            continue
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        if not distributed.all_ok(world, bool(torch.isfinite(norm)), dev):  # non-finite gradients: no step
            log.warning("epoch %d step %d: skipped a batch: non-finite gradients", epoch + 1, step)
            skipped += 1
            continue
        opt.step()
        run_loss += stats.loss
        run_n += 1
        nfe += stats.nfe
        on_step(run_loss / run_n)
    return _Epoch(run_loss / max(run_n, 1), nfe, skipped, time.perf_counter() - t0)


def _train(
    exp: ExperimentConfig,
    split: DatasetSplit,
    out: Path,
    dev: torch.device,
    world: distributed.World,
    resume: str | Path | None,
    show_progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    note: str = "",
    label: str = "",
    cv: CrossValidation | None = None,
    states: list[dict[str, torch.Tensor]] | None = None,
) -> TrainResult:
    """One training run: set-up, then per epoch the steps, validation and checkpoints, then the report.
    `label` prefixes the progress bar (a fold); with `cv`, every epoch is kept (the last is the model) and
    the report is the folds' (`cv.report`), not one on `split.val`. `states`: where given, each epoch's
    weights are appended to it (a fold's, for the model at the chosen epoch)."""
    tc = exp.train
    run = _setup(exp, split, dev, world, resume)
    split, model, history, best_score = run.split, run.model, run.history, run.best_score
    steps = math.ceil((len(split.train) // world.size) / tc.batch_size)
    progress = Progress(
        TextColumn("[bold]" + label + "epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]} | {task.fields[val]}"),
        TimeRemainingColumn(),
        console=CONSOLE,
        disable=not show_progress,
    )
    started = time.perf_counter()
    stopped: str | None = None
    summary = ""  # the last validation's one-line summary, shown beside the bar
    with progress:
        # the loss shown: this epoch's running mean, the last epoch's until its first step ("-" before any)
        shown = ["-"]
        task = progress.add_task("train", total=steps, epoch=run.start_epoch + 1, loss=shown[0], val="")

        def on_step(mean_loss: float) -> None:
            shown[0] = f"{mean_loss:.4f}"
            progress.update(task, advance=1, loss=shown[0])

        for epoch in range(run.start_epoch, min(tc.epochs, cv.epochs if cv is not None else tc.epochs)):
            progress.reset(task, total=steps, epoch=epoch + 1, loss=shown[0], val=summary)
            done = _epoch(run, exp, epoch, dev, world, steps, on_step)
            if epoch == 0 and 2 * done.skipped > steps:
                raise TrainingError(_solver_advice(done.skipped, steps, run.loss_fn.error, split, exp))
            if not world.main:  # rank 0 validates and writes; the others wait for it
                distributed.barrier(world)
                if distributed.any_true(world, False, dev):
                    break
                continue
            val = validate(run.bundle({}), split, exp, dev)
            score = val.get("val_nmse", val["val_loss"])
            row = {
                "epoch": epoch + 1,
                "lr": lr_at(exp, epoch),
                "train_loss": done.loss,
                "train_nfe": done.nfe,
                "train_seconds": done.seconds,
                **val,
            }
            history.append(row)
            if states is not None:
                states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            improved = score < best_score or cv is not None  # cross-validated: the last epoch is the model
            if improved:
                best_score = score
                save_checkpoint(out / BEST, run.bundle({"validation": row}))
            state = {
                "epoch": epoch + 1,
                "optimizer": run.opt.state_dict(),
                "history": history,
                "best_score": best_score,
                "experiment": to_dict(exp),
            }
            save_checkpoint(out / LAST, run.bundle({"validation": row}), train_state=state)
            write_metrics(out, exp, history, best_score, time.perf_counter() - started)
            summary = f"val nmse {val.get('val_nmse', float('nan')):.4f}" + (" *" if improved else "")
            progress.update(task, val=summary)
            log.log(  # the bar shows the epoch; the record is for logs
                logging.DEBUG if show_progress else logging.INFO,
                "epoch %d: %s",
                epoch + 1,
                json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}),
            )
            if on_epoch is not None:
                on_epoch(row)
            distributed.barrier(world)
            stop = _stop_reason(exp, history, time.perf_counter() - started)
            if done.skipped >= steps:  # every step failed: the weights have diverged and cannot come back
                stop = (
                    f"every batch of epoch {epoch + 1} failed to solve (the dynamics diverged); the best epoch is kept"
                )
            if distributed.any_true(world, stop is not None, dev):
                log.info("stopping after epoch %d: %s", epoch + 1, stop)
                stopped = stop
                break
    digests = distributed.gather_digests(world, model)
    if not world.main:
        return TrainResult(out / BEST, out / LAST, {})
    if world.active:  # the same weights on every rank, or DDP did not do its job
        (out / RANKS).write_text(json.dumps({"world_size": world.size, "weights_digest": digests}, indent=2))
        log.info("%d ranks, weights digests %s", world.size, digests)
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks ended with different weights: {digests}")
    if not (out / BEST).is_file():
        raise TrainingError(
            f"no epoch of {len(history)} had a finite validation score (the dynamics diverged from the start; "
            f"metrics.json in {out} has each epoch): try a smaller train.lr, --time-scale so that the longest "
            "series spans fewer model time units, or --seed"
        )
    best = load_checkpoint(out / BEST, dev)
    report, calibration = _report(run, exp, best, dev, cv, history, note)
    best = with_report(best, report, calibration)
    save_checkpoint(out / BEST, best)
    chosen = None
    if cv is not None:  # the model is the last epoch; its score is the folds' out-of-fold one
        oof = report["nmse"]["latent_ode"]["average"]
        chosen = {"epoch": len(history), "val_nmse": oof, "cross_validated": cv.summary["folds"]}
    seconds = time.perf_counter() - started
    metrics = write_metrics(out, exp, history, best_score, seconds, report, stopped, chosen)
    plot_best(out, best, split, exp, dev)
    return TrainResult(out / BEST, out / LAST, metrics)


def _report(
    run: _Run, exp: ExperimentConfig, best: ModelBundle, dev: torch.device, cv: CrossValidation | None,
    history: list[dict[str, Any]], note: str,
) -> tuple[dict[str, Any], Calibration]:  # fmt: skip
    """The best model's report (on validation, or the folds' out-of-fold one) with every warning about
    the data, and its calibration."""
    split, outliers, out_of_bounds = run.split, run.outliers, run.out_of_bounds
    if cv is None:
        report, calibration = training_report(best, split.val, dev, outliers, exp.train.val_task, out_of_bounds)
        report["warnings"] = validation_warnings(report, history)
    else:
        report, calibration = dict(cv.report), cv.calibration
        # cross-validated: one set of series, trained on (validation was in-sample and reports nothing)
        train_only = {"outliers_excluded": {"train": outliers["train"]}}
        train_only["out_of_bounds_excluded"] = {"train": out_of_bounds["train"]}
        report.update(train_only, cross_validation=cv.summary)
        report["warnings"] = validation_warnings(report, [{"val_nmse": v} for v in cv.curve[: cv.epochs]])
        lowest = int(np.argmin(cv.curve)) + 1
        if lowest < cv.epochs and lowest <= exp.train.warmup_epochs:
            report["warnings"] = [w for w in report["warnings"] if not w.startswith("the best epoch is the first")]
            report["warnings"].append(
                f"the folds' mean validation score was lowest after epoch {lowest} ({cv.curve[lowest - 1]:.4g}), "
                f"still in the learning-rate warm-up: training barely improves on its starting point here; the "
                f"model trains for {cv.epochs} epochs, the best after the warm-up ({cv.curve[cv.epochs - 1]:.4g}). "
                "Compare it with LOCF on your series (latentcast backtest --unseen)"
            )
    report["suspect_missing_codes"] = run.codes
    report["warnings"] += unbounded_at_zero(split, run.validity)
    ignored = split.description.get("ignored_columns") or []
    if ignored:
        report["warnings"].append(
            f"column{'s' if len(ignored) > 1 else ''} {', '.join(map(repr, ignored[:8]))}"
            f"{f' and {len(ignored) - 8} more' if len(ignored) > 8 else ''} not modelled (not among the channels; "
            "a numeric one can be named in --channels)"
        )
    report["validation_size"] = note
    named = [*run.examples[0], *(run.examples[1] if cv is None else [])][:MAX_EXAMPLES]
    report["outlier_examples"] = [{"series_id": i, "channel": c, "value": v} for i, _, c, v in named]
    return report, calibration


def unbounded_at_zero(split: DatasetSplit, validity: Validity) -> list[str]:
    """A hint per channel whose training values are ≥ 0 with zeros among them (so no log scale keeps its
    forecasts positive) and that has no lower bound: its intervals may reach below 0."""
    values = np.concatenate([s.values for s in split.train]) if split.train else np.zeros((0, len(split.channels)))
    out = []
    for j, c in enumerate(split.channels):
        seen = values[:, j][~np.isnan(values[:, j])]
        if seen.size and seen.min() == 0 and math.isinf(validity.lower[j]) and c not in split.log_channels:
            out.append(
                f"channel {c!r}: every training value is >= 0, some are 0, and nothing bounds its forecasts, whose "
                f"intervals may reach below 0; if it cannot be negative, train with --bounds '{c}=0:' (clips them)"
            )
    return out


@dataclasses.dataclass(frozen=True)
class CrossValidation:
    """What the folds found, for the final run: its report and calibration (out-of-fold), the mean
    validation score per epoch and a summary for metrics.json."""

    report: dict[str, Any]
    calibration: Calibration
    curve: list[float]
    summary: dict[str, Any]
    epochs: int  # the final run stops after these, on the folds' schedule (warm-up, cosine over train.epochs)


def _cross_validated(
    exp: ExperimentConfig,
    split: DatasetSplit,
    out: Path,
    dev: torch.device,
    world: distributed.World,
    show_progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    note: str,
) -> TrainResult:
    """Train once per fold (out/folds/K), choose the epochs on the folds' mean validation score, then train
    on every training and validation series for that many epochs (the last epoch is the model)."""
    tc = exp.train
    started = time.perf_counter()
    parts = fold_splits(split, tc.folds, tc.seed)
    histories, runs = [], []
    for k, fold in enumerate(parts):
        label = f"fold {k + 1}/{len(parts)} "
        states: list[dict[str, torch.Tensor]] = []
        res = _train(
            exp, fold, out / FOLDS / str(k + 1), dev, world, None, show_progress, None, label=label, states=states
        )
        histories.append(res.metrics["history"])
        runs.append((load_checkpoint(res.best, dev), fold.val, states))
    epochs, curve = choose_epochs(histories, first=tc.warmup_epochs + 1)
    # the report describes what is shipped: each fold's model after `epochs` epochs (its last, if it
    # stopped before), forecasting the series it never trained on
    fitted = []
    for bundle, val, states in runs:
        bundle.model.load_state_dict(states[min(epochs, len(states)) - 1])
        fitted.append((bundle, val))
    report, calibration = pooled_report(fitted, dev, tc.val_task, samples=tc.val_samples)
    summary = {
        "folds": len(parts),
        "epochs_chosen": epochs,
        "mean_val_score_per_epoch": [round(v, 6) for v in curve],
        "fold_best_epochs": [min(h, key=score)["epoch"] for h in histories],
        "fold_seconds": round(time.perf_counter() - started, 1),
    }
    log.info("cross-validation chose %d epochs (fold bests %s)", epochs, summary["fold_best_epochs"])
    every = [*split.train, *split.val]
    sizes = {"train": len(every), "val": 0, "test": len(split.test), "folds": len(parts)}
    desc = dict(split.description, split=sizes)
    final = dataclasses.replace(split, train=every, val=every, description=desc)  # val in-sample: progress only
    # the folds' learning-rate schedule, stopped after `epochs`: the model the folds measured at that epoch
    exp_final = dataclasses.replace(exp, train=dataclasses.replace(tc, patience=0))
    cv = CrossValidation(report, calibration, curve, summary, epochs)
    label = f"all {len(every)} series "
    return _train(exp_final, final, out, dev, world, None, show_progress, on_epoch, note=note, label=label, cv=cv)


def _stop_reason(exp: ExperimentConfig, history: list[dict[str, Any]], seconds: float) -> str | None:
    """Why to stop before the last epoch: no validation gain for `patience` epochs, or the next epoch
    would end past `max_minutes`."""
    tc = exp.train
    scores = [r.get("val_nmse", r["val_loss"]) for r in history]
    best_at = int(np.argmin(scores)) if scores else 0
    if tc.patience and len(scores) - 1 - best_at >= tc.patience:
        return f"no validation gain for {tc.patience} epochs (train.patience)"
    if tc.max_minutes and history:
        per_epoch = seconds / len(history)
        if seconds + per_epoch > 60 * tc.max_minutes:
            return f"the next epoch would end past {tc.max_minutes:g} minutes (--max-minutes)"
    return None


def _solver_advice(
    skipped: int, steps: int, error: Exception | None, split: DatasetSplit, exp: ExperimentConfig
) -> str:
    span = max(float(s.times[-1] - s.times[0]) for s in split.train)
    return (
        f"{skipped} of {steps} batches of the first epoch failed to solve "
        f"({error if error is not None else 'a non-finite loss or gradient'}); likely causes: the time "
        f"scale (model time = time × {split.time.scale:.4g}; the longest training series spans {span:.3g} model "
        "units: set --time-scale so that series span a few units), outliers (data.outlier_z, --log-channels), "
        "or a solver too strict for the data (model.solver.rtol/atol, max_num_steps)"
    )


def experiment_from_checkpoint(path: str | Path) -> ExperimentConfig:
    state = read_payload(path).get("train_state")
    if state is None:
        raise ValueError(f"{path}: has no training state")
    return from_dict(ExperimentConfig, state["experiment"])
