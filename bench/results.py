"""Measured results: where they are written and what stamps them (machine, commit).

Every evaluation and benchmark writes `<out>/<name>.json` (the figures) and `<out>/<name>.md` (the
table a person reads), naming the device and the commit they were measured on.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checkout's short commit; BENCH_COMMIT where the tree was copied without .git (a GPU machine);
    "unknown" outside a git checkout."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return "unknown"
    return git.stdout.strip() or "unknown"


def machine(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def write(out_dir: str | Path, name: str, result: dict[str, Any], markdown: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(markdown)
