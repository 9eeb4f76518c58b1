"""The server process's runtime: its garbage collector, and threads that own torch's OpenMP workers."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def on_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on a thread that ends with it. torch's OpenMP workers live as long as the thread that
    started them; a second live set of them makes OpenMP put every worker to sleep between parallel
    regions, and the inference lane's solves then run ~1.5x slower on CPU (bench/results/bulk.md)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="latentcast-load", daemon=True).start()
    return await done


def tune_gc() -> None:
    """Freeze what exists after loading (the models) and collect the young generation less often: a bulk
    request makes many small objects (bench/results/optimizations.md, "Garbage collector")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
