"""Which device to run on: the one rule training, evaluation, the API and the server share."""

from __future__ import annotations

import torch


def resolve_device(setting: str | torch.device) -> torch.device:
    """ "auto": the GPU when torch sees one, else the CPU. "cpu", "cuda" or "cuda:N" as named; a GPU that
    torch does not see is an error naming the choices (callers add their setting's name)."""
    if isinstance(setting, torch.device):
        setting = str(setting)
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise ValueError(f"device {setting!r} is not one of auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {setting!r} is not one of auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {setting!r} asked for, but torch sees no CUDA device; use cpu or auto")
    return device
