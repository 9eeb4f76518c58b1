"""The training report: how the best model forecasts held-out validation series, beside the naive
forecasts it must beat, with its interval coverage before and after calibration."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from latentcast.models.checkpoint import ModelBundle
from latentcast.models.data import Series
from latentcast.models.forecast import Forecaster
from latentcast.models.training.calibrate import BAND, MIN_VALUES, Calibration, fit_calibration, forecast_tasks
from latentcast.models.training.metrics import baseline_nmse, forecast_contexts, holdout_metrics


def training_report(
    bundle: ModelBundle,
    val: Sequence[Series],
    device: torch.device,
    outliers: dict[str, Any],
    task: str = "last",
    out_of_bounds: dict[str, Any] | None = None,
    samples: int = 32,
) -> tuple[dict[str, Any], Calibration]:
    """Validation NMSE per channel and on average for the model, last observation carried forward and a
    per-series linear trend; 80% coverage; the calibration fitted on validation (returned, for the
    checkpoint, and already applied to the reported figures)."""
    contexts = forecast_contexts(val, task)
    plain = Forecaster(bundle.model, bundle.normalizer, device, num_samples=samples)
    channels = list(bundle.channels)
    cal = fit_calibration(forecast_tasks(plain, val, task), task, channels)
    fc = Forecaster(bundle.model, bundle.normalizer, device, num_samples=samples, spread=cal.spread,
                    persistence=cal.persistence)  # fmt: skip
    model = holdout_metrics(fc, val, contexts)
    base = baseline_nmse(val, contexts, bundle.normalizer)
    rows = {
        name: {c: m.get(f"nmse_{c}") for c in channels} | {"average": m.get("nmse")}
        for name, m in (("latent_ode", model), ("locf", base["locf"]), ("linear_trend", base["linear_trend"]))
    }
    beats = model.get("nmse", float("inf")) < base["locf"]["nmse"]
    return {
        "split": "validation",
        "task": task,
        "series": len(val),
        "forecast_points": model.get("forecast_points", 0.0),
        "nmse": rows,
        "coverage80": model.get("coverage80"),
        **calibration_report(cal, bundle),
        "beats_locf": beats,
        "outliers_excluded": outliers,
        "out_of_bounds_excluded": out_of_bounds or {},
    }, cal


def calibration_report(cal: Calibration, bundle: ModelBundle) -> dict[str, Any]:
    """The report's calibration fields: spread factors, the coverage before them, the channels left
    uncalibrated, and the persistence time scales in the data's time unit with what they changed."""
    scale = bundle.time.scale
    channels = list(bundle.channels)
    taus = cal.persistence or (0.0,) * len(channels)
    return {
        "coverage80_before_calibration": cal.coverage_before,
        "calibration": list(cal.spread) if cal.spread else None,
        "calibration_band": list(BAND),
        "not_calibrated": [c for c in channels if c not in cal.coverage_before],  # < MIN_VALUES held-out values
        "persistence": {
            "time_unit": bundle.time.unit,
            "scales": {c: round(t / scale, 6) for c, t in zip(channels, taus, strict=True)},
            "error_ratio": cal.error_ratio,  # held-out squared error with ÷ without, per task
        },
    }


MIN_VALIDATION_POINTS = 100  # held-out points below which choosing an epoch on validation is noise


def validation_warnings(report: dict[str, Any], history: Sequence[dict[str, Any]]) -> list[str]:
    """What makes the choice of the best epoch or the intervals doubtful: a small validation split, a
    best epoch that is the first, channels left uncalibrated for want of held-out values."""
    out = []
    points, series = int(report.get("forecast_points", 0)), report.get("series", 0)
    if points < MIN_VALIDATION_POINTS and report.get("cross_validation"):
        out.append(
            f"every one of the {series} training and validation series was forecast out of fold, {points} held-out "
            f"points in all (fewer than {MIN_VALIDATION_POINTS}): the epochs chosen and the coverage measured are "
            "uncertain on a table this small; more series would help"
        )
    elif points < MIN_VALIDATION_POINTS:
        out.append(
            f"validation holds {points} held-out points in {series} series (fewer than {MIN_VALIDATION_POINTS}): "
            "the best epoch chosen on it and the coverage measured on it are noisy; add series, or give "
            "validation a larger share: a TOML file passed with --config holding [data] split = [0.6, 0.3, 0.1] "
            "(or [train] max_val_share)"
        )
    scores = [r.get("val_nmse", r.get("val_loss", float("inf"))) for r in history]
    if len(scores) > 1 and min(range(len(scores)), key=scores.__getitem__) == 0:
        out.append(
            f"the best epoch is the first of {len(scores)}: no later epoch improved the validation score"
            + (f" (on {points} points: possibly noise)" if points < MIN_VALIDATION_POINTS else "")
        )
    if report.get("not_calibrated"):
        out.append(
            f"intervals not calibrated for {', '.join(report['not_calibrated'])}: fewer than {MIN_VALUES} "
            "held-out values each (coverage as the model gives it)"
        )
    return out


def format_report(report: dict[str, Any]) -> str:
    """The report as the CLI prints it: a table of NMSE per channel, coverage, and a warning if the
    model does not beat carrying the last value forward."""
    rows = report["nmse"]
    channels = [c for c in rows["latent_ode"] if c != "average"]
    width = max(12, *(len(c) for c in channels))
    lines = [
        f"{'out-of-fold' if report.get('cross_validation') else 'validation'} report ({report['series']} series, "
        f"{int(report['forecast_points'])} held-out points; NMSE on the model's scale, logged channels in logs, lower "
        "is better; `latentcast backtest` scores on the data's scale):",
        "  " + "forecast".ljust(14) + "".join(c.rjust(width + 1) for c in [*channels, "average"]),
    ]
    for key, label in (("latent_ode", "latent ODE"), ("locf", "LOCF"), ("linear_trend", "linear trend")):
        cells = [rows[key].get(c) for c in [*channels, "average"]]
        lines.append("  " + label.ljust(14) + "".join(_num(v).rjust(width + 1) for v in cells))
    cov = report.get("coverage80")
    cal = report.get("calibration")
    note = (
        f" (after scaling the spread by {', '.join(f'{f:g}' for f in cal)}: below 1 narrows, above widens)"
        if cal
        else ""
    )
    lines.append(f"  80% interval coverage: {_pct(cov)}{note}")
    held = report.get("persistence") or {}
    pulled = {c: t for c, t in (held.get("scales") or {}).items() if t}
    if pulled:
        tasks = {"last": "last point", "half": "second half"}
        cells = []
        for c, t in pulled.items():
            ratio = (held.get("error_ratio") or {}).get(c) or {}
            change = ", ".join(f"{tasks.get(k, k)} ×{v:.2f}" for k, v in ratio.items())
            unit = held.get("time_unit", "unitless")
            span = f"{t:g} {unit}s" if unit != "unitless" else f"{t:g} time units"
            cells.append(f"{c} over {span}" + (f" (squared error {change})" if change else ""))
        lines.append("  forecasts near a channel's last value are pulled toward it: " + "; ".join(cells))
    elif held.get("scales"):
        lines.append(
            "  no channel's forecasts are pulled toward its last value (on validation that made no task better "
            "without making one worse): a query at the last observation time gets the model's own forecast"
        )
    for key, what in (
        ("out_of_bounds_excluded", "values outside the physical bounds set aside (data.bounds)"),
        ("outliers_excluded", "gross outliers set aside as entry errors (data.outlier_z)"),
    ):
        dropped = {part: {c: n for c, n in counts.items() if n} for part, counts in (report.get(key) or {}).items()}
        shown = "; ".join(f"{part} {counts}" for part, counts in dropped.items() if counts)
        if shown:
            lines.append(f"  {what}: {shown}")
        named = report.get("outlier_examples") if key == "outliers_excluded" else None
        if shown and named:
            lines.append(
                "    e.g. "
                + "; ".join(f"series {e['series_id']!r}: {e['channel']} = {e['value']:g}" for e in named)
                + " (plausible? raise data.outlier_z, or 0 to keep everything)"
            )
    codes = report.get("suspect_missing_codes") or {}
    if codes:
        shown = ",".join(f"{c}={'|'.join(f'{v:g}' for v in vs)}" for c, vs in codes.items())
        lines.append(
            "  possible codes for 'unknown' among the training values (frequent, and far from the rest): "
            f"{shown}; if so, train with --missing-values '{shown}'"
        )
    for warning in report.get("warnings") or []:
        lines.append(f"  WARNING: {warning}")
    better = better_baseline(report)
    if better is not None:
        name, score = better
        lines.append(
            f"  WARNING: the model does not beat {name} on validation (NMSE {score:.3f} against the model's "
            f"{rows['latent_ode'].get('average', float('nan')):.3f}): forecast these series with {name} instead, "
            "or train on more series (latentcast backtest --data FILE --model RUN/best.pt compares them on yours)"
        )
    return "\n".join(lines)


def better_baseline(report: dict[str, Any]) -> tuple[str, float] | None:
    """The naive forecast that beats the model on validation (the better of LOCF and the linear trend, by
    average NMSE), or None when the model beats both."""
    rows = report["nmse"]
    model = rows["latent_ode"].get("average")
    names = {"locf": "carrying the last observation forward", "linear_trend": "a per-series linear trend"}
    scores = {k: rows[k].get("average") for k in names if rows[k].get("average") is not None}
    if model is None or not scores:
        return None
    best = min(scores, key=lambda k: scores[k])
    return (names[best], float(scores[best])) if scores[best] < model else None


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def with_report(bundle: ModelBundle, report: dict[str, Any], cal: Calibration) -> ModelBundle:
    return dataclasses.replace(
        bundle, metrics={**bundle.metrics, "report": report}, calibration=cal.spread, persistence=cal.persistence
    )
