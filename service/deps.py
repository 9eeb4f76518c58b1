"""Route dependencies: the app's state and readiness (the API key is checked by `service.auth.RequireKey`
before any route runs; a request's body is read by the state, under its limits)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
