"""The package's layers: the service never loads the trainer, and the import contracts that say so fail
when someone adds a forbidden import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_service_loads_no_training_code() -> None:
    """A fresh interpreter: `import latentcast.service.main` (the app) pulls in neither the trainer nor
    its progress bars, plots or the in-process API. (`torch.distributed` itself is loaded by `import
    torch`, so only our own distributed module is checked.)"""
    code = (
        "import sys, json, latentcast.service.main\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('latentcast', 'rich', 'matplotlib')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "latentcast.models.forecast" in loaded  # the check sees what the service does load
    banned = [m for m in loaded if m.startswith(("latentcast.models.training", "rich", "matplotlib"))]
    banned += [m for m in loaded if m in ("latentcast.api", "latentcast.cli", "latentcast.backtest")]
    assert banned == []


def test_the_contracts_fail_when_the_service_imports_training(tmp_path: Path) -> None:
    """A copy of the package whose service imports the trainer, and whose benchmarks reach past the
    public modules: lint-imports names both broken contracts."""
    shutil.copytree(ROOT / "latentcast", tmp_path / "latentcast", symlinks=False)  # the links, resolved
    shutil.copytree(ROOT / "bench", tmp_path / "bench", ignore=shutil.ignore_patterns("results", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    ok = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout[-2000:]
    errors = tmp_path / "latentcast" / "service" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport latentcast.models.training  # noqa: E402\n")
    odenet = tmp_path / "bench" / "odenet.py"
    odenet.write_text(odenet.read_text() + "\nfrom latentcast.models.training.schedule import lr_at  # noqa: E402\n")
    bad = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "the service never imports training, even through another module BROKEN" in bad.stdout
    assert "the benchmarks use only the public modules BROKEN" in bad.stdout


def test_the_package_links_point_at_the_top_level_folders() -> None:
    """latentcast/models and latentcast/service are links to models/ and service/ (a checkout without
    symbolic links makes them text files, and everything would import something else or nothing)."""
    for name in ("models", "service"):
        link = ROOT / "latentcast" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), f"{link} is not a link to {name}/"


def test_no_module_is_loaded_twice_under_two_names() -> None:
    """With the repository root on sys.path (pytest puts it there), `models.x` would be a second copy
    of `latentcast.models.x`: nothing may import the folders by their top-level names."""
    import latentcast.models
    import latentcast.models.training
    import latentcast.service.main  # noqa: F401

    twice = [m for m in sys.modules if m.split(".")[0] in ("models", "service")]
    assert twice == []


def test_the_inference_core_keeps_a_small_documented_facade() -> None:
    """`latentcast.models` exports about a dozen names, each named in its docstring; the rest is reached
    through them (ModelBundle.load/save/embedded, Limits.pack) or lives in training and layers."""
    import latentcast.models

    names = latentcast.models.__all__
    assert len(names) <= 15, names
    doc = latentcast.models.__doc__ or ""
    assert [n for n in names if f"`{n}`" not in doc] == []
