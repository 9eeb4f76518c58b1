"""What `pip install` gives: one top-level name, lazy imports, the declared Python floor."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out, timeout=300)
    (path,) = out.glob("latentcast-*.whl")
    return path


def test_the_wheel_installs_only_latentcast(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"latentcast", wheel.name.split("-py3")[0] + ".dist-info"}
    for data in ("latentcast/models/embedded/pbcseq.pt", "latentcast/models/training/configs/default.toml"):
        assert data in names
    assert not any(n.startswith(("latentcast/bench", "latentcast/tests")) for n in names)


def test_in_a_fresh_venv_models_is_not_importable_and_latentcast_is(wheel: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "env", with_pip=True)
    py = tmp_path / "env" / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    for name in ("models", "service"):
        assert "ModuleNotFoundError" in run(f"import {name}").stderr
    ok = run("import latentcast, sys; print(latentcast.__version__, 'torch' in sys.modules)")
    assert ok.returncode == 0 and ok.stdout.split() == ["0.1.0", "False"], ok.stderr


def test_the_client_loads_neither_torch_nor_the_web_stack() -> None:
    code = (
        "import sys, latentcast.client, latentcast.frames, latentcast.times, latentcast.arrowio; "
        "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'latentcast.models') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_one_python_floor_everywhere() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = project["project"]["requires-python"].removeprefix(">=")
    assert floor == project["tool"]["mypy"]["python_version"] == "3.11"
    assert project["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")
    assert sys.version_info[:2] >= tuple(map(int, floor.split(".")))
    assert f"Python ≥ {floor}" in (ROOT / "README.md").read_text()
