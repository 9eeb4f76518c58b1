"""The training and evaluation CLI, end to end on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from latentcast.cli import app
from latentcast.models.checkpoint import load_checkpoint

TINY = """
[model]
latent_dim = 3
encoder_hidden = 8
dynamics_hidden = 8
[train]
batch_size = 64
val_samples = 4
plot_series = 1
"""


def test_train_on_a_user_file_then_resume(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        days = np.sort(rng.choice(60, size=6, replace=False))
        for d in days:
            rows.append(
                {
                    "id": f"u{i}",
                    "time": (pd.Timestamp("2026-01-01") + pd.Timedelta(days=int(d))).isoformat(),
                    "hr": 60 + 10 * np.sin(d / 9 + i) + rng.normal(),
                    "bp": np.nan if d % 3 else 120.0 + i,
                }
            )
    data = tmp_path / "obs.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    # resuming is for one run: folds = 0 keeps this 20-series table off cross-validation (test_crossval)
    (tmp_path / "tiny.toml").write_text(TINY + "folds = 0\n")
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(data),
        "--channels",
        "hr,bp",
        "--log-channels",
        "bp",
        "--time-unit",
        "day",
        "--time-scale",
        "0.1",
        "--config",
        str(tmp_path / "tiny.toml"),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--quiet",
        "--device",
        "cpu",
        "--seed",
        "3",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "best epoch" in res.output
    bundle = load_checkpoint(out / "best.pt")
    assert bundle.channels == ("hr", "bp") and bundle.normalizer.log == (False, True)
    assert bundle.time.unit == "day" and bundle.time.scale == 0.1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"]["train"]["seed"] == 3 and len(metrics["history"]) == 2
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--resume",
            str(out / "last.pt"),
            "--epochs",
            "3",
            "--quiet",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 3


def test_user_file_without_channels_is_a_clear_error(tmp_path) -> None:
    data = tmp_path / "obs.csv"
    pd.DataFrame({"id": [1], "time": [0.0], "x": [1.0]}).to_csv(data, index=False)
    res = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet"])
    assert res.exit_code != 0
    assert "channels" in str(res.exception)


def test_evaluate_pbcseq_writes_the_table(tmp_path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY + "[model.solver]\nrtol = 1e-2\natol = 1e-3\n")
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            "pbcseq",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--quiet",
            "--device",
            "cpu",
            "--config",
            str(tmp_path / "tiny.toml"),
        ],
    )
    assert res.exit_code == 0, res.output
    before = (out / "best.pt").read_bytes()
    from bench.evaluate import main as evaluate_main

    evaluate_main(
        ["pbcseq", "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "results"), "--device", "cpu"]
    )
    table = json.loads((tmp_path / "results" / "pbcseq.json").read_text())
    assert table["held_out"] == 62 and table["patients"] == 59  # 3 held-out patients have a single visit
    for key in ("latent_ode", "locf", "linear_trend"):
        assert 0 < table[key]["nmse"] < 100
    assert "last observation carried forward" in (tmp_path / "results" / "pbcseq.md").read_text()
    assert load_checkpoint(out / "best.evaluated.pt").metrics["evaluation"]["task"] == "pbcseq last visit"
    assert (out / "best.pt").read_bytes() == before  # the input is never rewritten


def _user_csv(path, n_series: int) -> None:
    rng = np.random.default_rng(1)
    rows = [
        {"id": f"u{i}", "time": float(t), "hr": 60 + 5 * np.sin(t / 7 + i)}
        for i in range(n_series)
        for t in np.sort(rng.choice(50, size=5, replace=False))
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def _run_on_a_terminal(args: list[str], cwd) -> tuple[int, str]:
    """`python -m latentcast ARGS` with its stdout and stderr on a pseudo-terminal, as a person types it."""
    import os
    import pty
    import subprocess
    import sys

    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "latentcast", *args], stdout=child, stderr=child, cwd=cwd, env=env)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(timeout=300), out.decode(errors="replace")


def test_train_with_its_progress_bar_on_a_terminal(tmp_path) -> None:
    """The default path (no --quiet): rich draws the bar on a real terminal through every epoch."""
    _user_csv(tmp_path / "obs.csv", 24)
    (tmp_path / "tiny.toml").write_text(TINY)
    args = ["train", "--data", "obs.csv", "--channels", "hr", "--time-unit", "day", "--config", "tiny.toml"]
    code, out = _run_on_a_terminal([*args, "--out", "run", "--epochs", "3", "--device", "cpu"], tmp_path)
    assert code == 0, out[-3000:]
    assert "\x1b[" in out and "━" in out  # the bar, drawn with terminal escapes: rich saw a terminal
    # 24 series: too few for a validation split to choose an epoch on, so 5 folds, then every series
    assert "fold 1/5 epoch 3" in out and "fold 5/5 epoch 3" in out and "val nmse" in out
    assert "5-fold cross-validation chose" in out and "out-of-fold report (" in out
    assert "nan" not in out  # the bar shows the last epoch's loss until the first step of the next
    assert '"val_nmse"' not in out  # the per-epoch log record is for logs (--quiet), not printed into the bar
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "folds" / "5" / "best.pt").is_file()
    code, out = _run_on_a_terminal([*args, "--out", "run2", "--epochs", "2", "--device", "cpu", "--quiet"], tmp_path)
    assert code == 0 and "━" not in out  # no bar
    chosen = json.loads((tmp_path / "run2" / "metrics.json").read_text())["best"]["epoch"]
    assert out.count('"val_nmse"') == 5 * 2 + chosen  # one record per epoch instead: 5 folds, then the final run


def test_errors_are_one_line_and_a_nonzero_exit(tmp_path) -> None:
    import subprocess
    import sys

    _user_csv(tmp_path / "two.csv", 2)
    cmd = [sys.executable, "-m", "latentcast", "train", "--data", "two.csv", "--channels", "hr", "--out", "run"]
    no_unit = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert no_unit.returncode == 1 and "the times are numbers; name their unit with --time-unit" in no_unit.stderr
    cmd += ["--time-unit", "day"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("latentcast: error")]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert "2 series with 2 or more observations" in lines[0] and "training needs at least 20" in lines[0]
    assert "no setting lowers this" in lines[0] and "cross-validation" not in proc.stderr  # refused up front
    assert not (tmp_path / "run").exists()  # nothing left behind
    debug = subprocess.run([*cmd, "--debug"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def _table(kind: str, n_series: int = 24) -> pd.DataFrame:
    """Irregular series in one of three time conventions: seconds over ~an hour, days from -1,273 to
    +7,000 around a baseline, or ISO date-times over ~two years."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n_series):
        u = np.sort(rng.uniform(0, 1, 8))
        if kind == "seconds":
            t: list[object] = list(u * 3600.0)
        elif kind == "days":
            t = list(-1273.0 + u * 8273.0)
        else:
            t = [(pd.Timestamp("2024-01-01T00:00:00Z") + pd.Timedelta(days=float(d))).isoformat() for d in u * 730]
        rows += [
            {"id": f"p{i}", "time": tt, "hr": 70 + 5 * np.sin(3 * x + i), "bp": 120 + 10 * x}
            for tt, x in zip(t, u, strict=True)
        ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["seconds", "days", "dates"])
def test_time_units_are_chosen_from_the_data_through_the_cli(tmp_path, kind: str) -> None:
    import latentcast

    frame = _table(kind)
    frame.to_csv(tmp_path / "obs.csv", index=False)
    (tmp_path / "tiny.toml").write_text(TINY)
    unit = {"seconds": ["--time-unit", "second"], "days": ["--time-unit", "day"], "dates": []}[kind]
    args = [
        "train",
        "--data",
        str(tmp_path / "obs.csv"),
        "--channels",
        "hr,bp",
        *unit,
        "--config",
        str(tmp_path / "tiny.toml"),
    ]
    res = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "run"), "--epochs", "2", "--quiet", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    assert "out-of-fold report" in res.output and "LOCF" in res.output  # 22 series: cross-validated
    bundle = load_checkpoint(tmp_path / "run" / "best.pt")
    pre = bundle.data["preprocessing"]
    assert pre["time_scale_rule"].startswith("auto") and bundle.time.scale == pytest.approx(pre["time_scale"])
    span = {"seconds": 3600.0, "days": 8273.0, "dates": 730.0}[kind]  # in the model's unit (days for dates)
    assert 2.0 < span * bundle.time.scale < 12.0  # a typical series spans a few model-time units
    model = latentcast.load(tmp_path / "run" / "best.pt", device="cpu")
    ids = frame["id"].unique()[:3]
    last = frame[frame["id"].isin(ids)].groupby("id")["time"].max()
    later = {
        k: [pd.Timestamp(v) + pd.Timedelta(days=30)] if kind == "dates" else [v + span / 20] for k, v in last.items()
    }
    fc = model.predict(frame[frame["id"].isin(ids)], query_times=later)
    assert len(fc) == 3 * 2 and np.isfinite(fc["mean"]).all()


def test_the_choices_and_the_report_are_in_get_models(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from latentcast.service import Settings, create_app
    from tests.service.conftest import wait_ready

    _table("days").to_csv(tmp_path / "obs.csv", index=False)
    (tmp_path / "tiny.toml").write_text(TINY)
    args = [
        "train",
        "--data",
        str(tmp_path / "obs.csv"),
        "--channels",
        "hr,bp",
        "--time-unit",
        "day",
        "--config",
        str(tmp_path / "tiny.toml"),
    ]
    assert CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--epochs", "2", "--quiet"]).exit_code == 0
    settings = Settings(models=[tmp_path / "run" / "best.pt"], device="cpu")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        (info,) = client.get("/models").json()["models"]
    assert info["training_data"]["preprocessing"]["time_scale_rule"].startswith("auto")
    assert info["time_unit"] == "day" and info["training_data"]["preprocessing"]["time_unit_rule"] == "given"
    assert set(info["metrics"]["report"]["nmse"]) == {"latent_ode", "locf", "linear_trend"}
    assert "fitted_ids" not in info["training_data"]  # in the checkpoint, not shown to every client
    span = info["training_data"]["max_span_in_time_unit"]  # days, as the clients' times
    assert 0 < span <= info["max_horizon"] and "max_span" not in info["training_data"]


@pytest.mark.parametrize(("extra", "name"), [([], "visits"), (["--name", "mine"], "mine")])
def test_the_run_directory_and_the_name_default_to_the_file(tmp_path, monkeypatch, extra: list[str], name: str) -> None:
    monkeypatch.chdir(tmp_path)
    _user_csv(tmp_path / "visits.csv.gz", 24)
    table = pd.read_csv(tmp_path / "visits.csv.gz")  # and a text column that is no channel
    table.assign(ward=np.where(table.index % 2 == 0, "ICU", "step-down")).to_csv(
        tmp_path / "visits.csv.gz", index=False
    )
    (tmp_path / "tiny.toml").write_text(TINY)
    args = ["train", "--data", "visits.csv.gz", "--channels", "hr", "--time-unit", "day", "--config", "tiny.toml"]
    res = CliRunner().invoke(app, [*args, *extra, "--epochs", "1", "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"run directory: {Path('runs') / name}" in res.output
    assert "WARNING: column 'ward' not modelled (not among the channels" in res.output
    assert load_checkpoint(tmp_path / "runs" / name / "best.pt").name == name


def test_train_with_events_and_static_columns_on_a_terminal(tmp_path) -> None:
    """`latentcast train --events --levels --static` as typed, bar and all, on a table in minutes; the model
    then forecasts a history under a plan (a dose and an infusion rate) given in the same minutes."""
    import latentcast
    from bench.pkpd import make_pkpd
    from latentcast.models import ModelBundle

    table = make_pkpd(40, seed=2, infusion=True)
    table.assign(time=table["time"] * 60.0).to_csv(tmp_path / "pk.csv", index=False)
    (tmp_path / "tiny.toml").write_text(TINY)
    args = ["train", "--data", "pk.csv", "--channels", "conc", "--events", "dose", "--levels", "rate", "--static"]
    args += ["weight"]
    code, out = _run_on_a_terminal(
        [*args, "--time-unit", "minute", "--config", "tiny.toml", "--epochs", "2", "--out", "r", "--device", "cpu"],
        tmp_path,
    )
    assert code == 0, out[-3000:]
    assert "\x1b[" in out and "━" in out and "val nmse" in out  # rich's bar on a real terminal
    bundle = ModelBundle.load(tmp_path / "r" / "best.pt")
    assert bundle.inputs.events == ("dose", "rate") and bundle.inputs.static == ("weight",)
    assert bundle.inputs.levels == ("rate",)
    assert not {"dose", "rate"} & set(bundle.data["ignored_columns"]) and bundle.channels == ("conc",)
    assert bundle.time.unit == "minute"
    history = pd.read_csv(tmp_path / "pk.csv", dtype={"id": str})
    history = history[(history["id"] == "s0001") & (history["time"] < 2400.0)]
    plan = pd.DataFrame({"id": "s0001", "time": [2700.0, 2710.0], "dose": [300.0, None], "rate": [None, 20.0]})
    fc = latentcast.load(tmp_path / "r" / "best.pt", device="cpu").predict(
        pd.concat([history, plan]), query_times=[2600.0, 2760.0]
    )
    assert list(fc["time"]) == [2600.0, 2760.0] and np.isfinite(fc["point"]).all()
    wrong = ["train", "--data", str(tmp_path / "pk.csv"), "--channels", "conc", "--static", "height"]
    res = CliRunner().invoke(app, [*wrong, "--time-unit", "hour", "--quiet"])
    assert res.exit_code != 0 and "['height'] not in the table" in str(res.exception or res.output)
