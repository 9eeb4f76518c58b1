"""Which device to run on: the one rule training, evaluation, the API and the server share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# on a CPU, solves of at most this many rows (series × latent samples) run on one intra-op thread: their
# kernels are too small to share, and each parallel region waits for every thread it wakes, which on a
# busy machine may not be running (bench/results/contention.md)
SMALL_ROWS = 256


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


def threads_for(rows: int, device: torch.device, small_rows: int = SMALL_ROWS) -> int:
    """The intra-op threads a solve of `rows` rows (series × samples) uses on `device`."""
    if device.type == "cpu" and rows <= small_rows:
        return 1
    return torch.get_num_threads()


@contextlib.contextmanager
def intra_op_threads(rows: int, device: torch.device, small_rows: int = SMALL_ROWS) -> Iterator[int]:
    """Run the block on `threads_for(rows, ...)` intra-op threads (this thread's setting), then restore it."""
    before = torch.get_num_threads()
    threads = threads_for(rows, device, small_rows)
    if threads == before:
        yield threads
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
