"""Route dependencies: the app's state, readiness, and a body read under its size limit (the API key is
checked by `service.auth.RequireKey` before any route runs)."""

from __future__ import annotations

import asyncio
import zlib
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


ENCODINGS = ("gzip", "x-gzip", "deflate", "identity")


def content_encoding(header: str | None) -> str:
    """The one coding a body is sent in ("identity" when none); 415 for any other or for stacked codings."""
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return "identity"
    if len(codings) > 1 or codings[0] not in ENCODINGS:
        raise ServiceError(
            415,
            f"Content-Encoding {header!r} is not supported; send gzip, deflate or no encoding",
            [{"loc": ["headers", "content-encoding"], "msg": "unsupported content coding", "series_id": None}],
        )
    return codings[0]


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """A gzip or deflate body, decompressed to at most `limit` bytes (413 beyond: a small body must not
    become a large one unchecked), or a 400 when it is not a whole stream of that coding."""
    if coding == "identity":
        return body
    wbits = 16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
    if coding == "deflate" and body[:1] and (body[0] & 0x0F) != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, as some clients send it, with no zlib header
    parts: list[bytes] = []
    size, rest = 0, body
    while True:  # gzip allows several members one after another (RFC 1952 §2.2)
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise ServiceError(400, f"the body is not valid {coding} ({exc})") from None
        size += len(part)
        if size > limit or (not inflater.eof and inflater.unconsumed_tail):
            raise ServiceError(413, f"body over {limit} bytes once decompressed (LATENTCAST_MAX_BODY_BYTES)")
        parts.append(part)
        if not inflater.eof:
            raise ServiceError(400, f"the body is not a whole {coding} stream (it ends early)")
        rest = inflater.unused_data
        if not rest or wbits != 16 + zlib.MAX_WBITS:
            break
    if rest:
        raise ServiceError(400, f"bytes follow the end of the {coding} stream")
    return b"".join(parts)
