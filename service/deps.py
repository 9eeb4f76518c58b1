"""Route dependencies: the app's state, readiness, and a body read under its size limit (the API key is
checked by `service.auth.RequireKey` before any route runs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from latentcast.service.errors import ServiceError
from latentcast.service.state import AppState


async def get_state(request: Request) -> AppState:  # async: FastAPI runs sync dependencies in a threadpool
    state: AppState = request.app.state.latentcast
    return state


State = Annotated[AppState, Depends(get_state)]


async def require_ready(state: State) -> None:
    if not state.ready or state.batcher is None:
        raise ServiceError(
            503,
            "models are still loading; retry shortly (GET /readyz says when ready)",
            headers={"Retry-After": "2"},
        )


Ready = Annotated[None, Depends(require_ready)]


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing anything over `limit` bytes (413) without reading it all, and a body
    still arriving after `timeout` seconds (408: a trickled upload must not hold a slot forever)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, f"body of {declared} bytes; the limit is {limit} (LATENTCAST_MAX_BODY_BYTES)")
    chunks, size = [], 0

    async def receive() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, f"body over {limit} bytes (LATENTCAST_MAX_BODY_BYTES)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        raise ServiceError(
            408,
            f"the body did not arrive within {timeout:g} s (LATENTCAST_BODY_TIMEOUT_S)",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ServiceError(499, "the client went away before sending its whole body") from None
    return b"".join(chunks)
