"""The container smoke test (deploy/smoke.sh): build the image with buildah, run it, POST a forecast,
check the user. Minutes long and needs root, buildah and debootstrap, so it is marked slow and left out
of `make test`; `make container-smoke` runs it, and deploy/README.md records its last output."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_image_builds_runs_as_non_root_and_forecasts() -> None:
    env = {**os.environ, "TORCH_VARIANT": "cpu", "PORT": "18010"}
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "smoke.sh")], env=env, capture_output=True, text=True, timeout=1800
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "HTTP 200" in out and '"forecasts"' in out
    (uid,) = re.findall(r"runs as uid (\d+)", out)
    assert int(uid) != 0
