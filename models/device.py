"""Which device to run on: the one rule training, evaluation, the API and the server share."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
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


class ThreadChoice:
    """How many intra-op threads a CPU solve of more than `small_rows` rows uses: one, or all of torch's,
    whichever has been faster lately for solves of its size. Beside another busy process one thread can
    be twice as fast (every parallel region waits for a team thread the scheduler has put aside); on a
    quiet machine all threads are faster (bench/results/contention.md). Each size class (rows rounded
    down to a power of two) keeps a moving average of seconds per row for each choice; a solve takes the
    faster, and every `explore`-th solve of a class the other, so the choice follows the machine's load."""

    def __init__(self, explore: int = 16, weight: float = 0.25):
        self.explore, self.weight = explore, weight
        self._avg: dict[tuple[int, bool], float] = {}  # (class, all threads?) → seconds per row
        self._seen: dict[int, int] = {}  # class → solves recorded
        self._lock = threading.Lock()

    def pick(self, rows: int, threads: int) -> int:
        """The threads for a solve of `rows` rows when torch is set to `threads` (no state changes)."""
        if threads <= 1:
            return threads
        c = rows.bit_length()
        many, one = self._avg.get((c, True)), self._avg.get((c, False))
        if many is None or one is None:
            return threads if many is None else 1  # try each once
        use_many = many <= one
        if self._seen.get(c, 0) % self.explore == self.explore - 1:
            use_many = not use_many
        return threads if use_many else 1

    def record(self, rows: int, threads: int, seconds: float) -> None:
        """A solve of `rows` rows on `threads` threads took `seconds`."""
        c, per_row = rows.bit_length(), seconds / max(rows, 1)
        with self._lock:
            key = (c, threads > 1)
            old = self._avg.get(key)
            self._avg[key] = per_row if old is None else old + self.weight * (per_row - old)
            self._seen[c] = self._seen.get(c, 0) + 1


CHOICE = ThreadChoice()  # the process's: torch's thread setting is the process's too


@dataclasses.dataclass(frozen=True)
class ThreadPolicy:
    """How many intra-op threads a CPU solve of `rows` rows (series × samples) uses, fixed when a
    forecaster is built: one for at most `small_rows` rows; above that one or all of `most` (None:
    torch's setting when the solve starts), whichever has been faster lately (`ThreadChoice`). A GPU
    solve keeps torch's setting. The server builds its lanes' forecasters with it at start-up (the
    express lane's with `most=1`), so no request changes a setting another relies on."""

    small_rows: int = SMALL_ROWS
    most: int | None = None

    def __post_init__(self) -> None:
        if self.small_rows < 0 or (self.most is not None and self.most < 1):
            raise ValueError(f"ThreadPolicy: small_rows ≥ 0 and most ≥ 1 (or None), got {self}")

    def threads(self, rows: int, device: torch.device, choice: ThreadChoice | None = None) -> int:
        """The intra-op threads a solve of `rows` rows uses on `device` (no state changes)."""
        if device.type != "cpu":
            return torch.get_num_threads()
        if rows <= self.small_rows:
            return 1
        most = self.most if self.most is not None else torch.get_num_threads()
        return (choice or CHOICE).pick(rows, most)


@contextlib.contextmanager
def intra_op_threads(
    rows: int, device: torch.device, policy: ThreadPolicy | None = None, choice: ThreadChoice | None = None
) -> Iterator[int]:
    """Run the block on `policy.threads(rows, ...)` intra-op threads (this thread's setting), then restore
    it; a CPU block on a choice between one and several threads is timed for `choice` (default `CHOICE`)."""
    policy = policy or ThreadPolicy()
    before = torch.get_num_threads()
    threads = policy.threads(rows, device, choice)
    most = policy.most if policy.most is not None else before
    timed = device.type == "cpu" and rows > policy.small_rows and most > 1
    if threads != before:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        yield threads
        if timed:
            (choice or CHOICE).record(rows, threads, time.perf_counter() - t0)
    finally:
        if threads != before:
            torch.set_num_threads(before)
