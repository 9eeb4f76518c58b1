"""The API key: one parser for every protected path, in one middleware.

A key is sent as `X-API-Key: KEY` or `Authorization: Bearer KEY` (the scheme in any case, RFC 9110
§11.1). A header given twice, or two headers that disagree, is a 400: a check must not depend on which
copy a parser happens to read.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from latentcast.service.errors import ServiceError

CHALLENGE = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request presents (None: none); a ServiceError (400) when it is ambiguous or malformed."""
    given = [v.strip() for k, v in headers if k.lower() == b"x-api-key" and v.strip()]  # empty: none sent
    auth = [v.strip() for k, v in headers if k.lower() == b"authorization" and v.strip()]
    if len(given) > 1 or len(auth) > 1:
        raise ServiceError(400, "the API key is sent more than once; send one X-API-Key or one Authorization header")
    bearer = None
    if auth:
        scheme, _, token = auth[0].partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            bearer = token.strip()
        elif not given:  # another scheme (a proxy's Basic) is not ours to read when X-API-Key carries the key
            raise ServiceError(
                401, "Authorization must be 'Bearer <key>' (or send the key in X-API-Key)", headers=CHALLENGE
            )
    if given and bearer is not None and given[0] != bearer:
        raise ServiceError(400, "X-API-Key and Authorization carry different keys; send one")
    return given[0] if given else bearer


def check_key(headers: Iterable[tuple[bytes, bytes]], key: bytes) -> None:
    """401 unless the request presents `key` (compared in constant time)."""
    given = presented_key(headers)
    if not given or not secrets.compare_digest(given, key):
        raise ServiceError(401, "missing or wrong API key: send it in the X-API-Key header", headers=CHALLENGE)


class RequireKey:
    """With an API key set, these paths need it (`check_key`): /forecast and /models always, /metrics
    and the docs unless LATENTCAST_OPEN_METRICS / OPEN_DOCS open them."""

    def __init__(self, app: ASGIApp, paths: set[str], key: str, prefixes: tuple[str, ...] = ()):
        self.app = app
        self.paths = paths
        self.prefixes = prefixes  # and every path under these (the OIP's /v2/models/…)
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in self.paths or (self.prefixes and path.startswith(self.prefixes)):
            try:
                check_key(scope.get("headers") or [], self.key)
            except ServiceError as exc:
                body = {"error": exc.detail} if path.startswith("/v2") else exc.body()
                response = JSONResponse(body, status_code=exc.status, headers=exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
