"""The training and evaluation CLI, end to end on tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
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
    (tmp_path / "tiny.toml").write_text(TINY)
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
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "pbcseq",
            "--checkpoint",
            str(out / "best.pt"),
            "--out",
            str(tmp_path / "results"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
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
    assert "\x1b[" in out  # drawn with terminal escapes: rich saw a terminal
    assert "epoch 3" in out and "val nmse" in out and "best epoch" in out
    assert (tmp_path / "run" / "best.pt").is_file()


def test_errors_are_one_line_and_a_nonzero_exit(tmp_path) -> None:
    import subprocess
    import sys

    _user_csv(tmp_path / "two.csv", 2)
    cmd = [sys.executable, "-m", "latentcast", "train", "--data", "two.csv", "--channels", "hr", "--out", "run"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("latentcast: error")]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert "2 series with 2 or more observations" in lines[0] and "training needs at least 20" in lines[0]
    assert not (tmp_path / "run" / "best.pt").exists()
    debug = subprocess.run([*cmd, "--debug"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
