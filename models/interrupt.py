"""Stopping a forecast part-way when nobody will read it.

A caller (the service's scheduler) runs model code under `interruptible(wanted)`; the long loops (the
encoder's walk over a series' observations, the solver's steps, the chunks of a batch) call `poll()`
every few iterations, which raises `Interrupted` once `wanted()` is False. Outside such a block `poll`
costs one context-variable read.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

_WANTED: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("latentcast_wanted", default=None)


class Interrupted(Exception):
    """The work was stopped part-way because its caller no longer wants it; nothing it computed is kept."""


@contextlib.contextmanager
def interruptible(wanted: Callable[[], bool]) -> Iterator[None]:
    """Run the block so that `poll()` inside it raises `Interrupted` once `wanted()` returns False."""
    token = _WANTED.set(wanted)
    try:
        yield
    finally:
        _WANTED.reset(token)


def poll() -> None:
    """Raise `Interrupted` if the enclosing `interruptible` block's work is no longer wanted."""
    wanted = _WANTED.get()
    if wanted is not None and not wanted():
        raise Interrupted("stopped: nobody is waiting for this work any more")
