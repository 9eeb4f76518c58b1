"""Running the app under uvicorn with every connection-level resource bounded by a setting.

uvicorn bounds idle keep-alive connections, concurrency and the graceful shutdown, but not how long a
client may take to send a request's headers, nor (with httptools) how large they may be: a client
trickling headers, or sending a 300 MiB one, holds a socket and memory forever. `guarded_protocol`
adds both. And at `LATENTCAST_MAX_CONNECTIONS` uvicorn answers every new request 503, so a client that
opens that many sockets and sends nothing locks everyone out until the header timeout; here a request
that arrives at the limit takes the place of a connection that is doing nothing (idle, or still without
its headers, the longest waiting first) or, failing that, of the slowest body upload (none waiting or
uploading for under 1 s is taken); with none to take, it is answered 503 with Retry-After. A server
whose models fail to load exits non-zero at once, with one line saying why.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from latentcast.service.config import Settings
from latentcast.service.main import create_app

log = logging.getLogger("latentcast.service")


# a connection waiting or uploading for less than this is never closed to make room: a new one is about
# to send its headers, and an upload's rate is not known yet
GRACE_S = 1.0


def guarded_protocol(
    header_timeout: float,
    max_header_bytes: int,
    max_connections: int | None = None,
    on_evict: Callable[[str], None] | None = None,
    send_timeout: float | None = None,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for each request's headers (closed past it; 408 if
    part of them came), a bound on their size (431), counted as the bytes arrive, a deadline for a
    client to take any of an answer it is sent (`send_timeout`: past it the connection is aborted and
    the unsent bytes freed; `on_evict("send")`), and at most
    `max_connections` connections: at the limit, room is made for a new request by closing one that does
    nothing (`on_evict(phase)` is told: "waiting" or "body"), and it is answered 503 (JSON, Retry-After;
    `on_evict("refused")`) only if none does."""
    full_body = orjson.dumps(
        {
            "detail": f"the server is at LATENTCAST_MAX_CONNECTIONS ({max_connections}) connections, every one busy "
            "with a request; retry after a second",
            "errors": [],
        }
    )

    async def full(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": full_body})

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._tail = b""
            self._seen = 0
            self._in_headers = False
            self._timer: asyncio.TimerHandle | None = None
            self._since = time.monotonic()  # waiting for a request since; then its body's start
            self._body_bytes = 0
            self._app = self.app
            self.limit_concurrency = None  # the limit is ours (`on_headers_complete`), not uvicorn's
            self._stalled: asyncio.TimerHandle | None = None
            self._arm()

        def pause_writing(self) -> None:
            """The transport's buffer is over its high-water mark: the client is not reading."""
            super().pause_writing()
            if send_timeout is not None and self._stalled is None:
                self._stalled = self.loop.call_later(send_timeout, self._send_stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None

        def _send_stalled(self) -> None:
            self._stalled = None
            if not self.transport.is_closing():
                log.info("closed a connection that took none of its answer for %g s", send_timeout)
                self.transport.abort()  # drops the unsent answer
                if on_evict is not None:
                    on_evict("send")

        def _arm(self) -> None:
            self._in_headers, self._seen, self._tail = True, 0, b""
            if self._timer is None:
                self._timer = self.loop.call_later(header_timeout, self._too_slow)

        def _waiting(self) -> bool:
            """Doing nothing: without a complete request's headers, or idle between requests."""
            return self._in_headers or (self.cycle is not None and self.cycle.response_complete and not self.pipeline)

        def _uploading(self) -> bool:
            return self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete

        def _make_room(self) -> None:
            """Over the connection limit (this one counted), close connections doing nothing (longest waiting
            first), then the slowest body uploads, until this request fits."""
            limit = max_connections
            if limit is None or len(self.connections) <= limit:
                return
            now = time.monotonic()
            others = [c for c in self.connections if c is not self and isinstance(c, Guarded)]
            others = [c for c in others if now - c._since >= GRACE_S]
            waiting = sorted((c for c in others if c._waiting()), key=lambda c: c._since)
            uploads = [c for c in others if c._uploading()]
            uploads.sort(key=lambda c: c._body_bytes / (now - c._since))
            for conn, phase in [*((c, "waiting") for c in waiting), *((c, "body") for c in uploads)]:
                if len(self.connections) <= limit:
                    return
                conn._evict(phase)

        def _evict(self, phase: str) -> None:
            if self._seen or phase == "body":  # someone may read it: say why
                self._refuse(503, "closed to make room for another request (LATENTCAST_MAX_CONNECTIONS)")
            else:
                self.transport.close()
            self.connections.discard(self)  # uvicorn counts it gone only once the close completes
            if on_evict is not None:
                on_evict(phase)

        def _disarm(self) -> None:
            self._in_headers = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            self._timer = None
            if self._in_headers and not self.transport.is_closing():
                if self._seen:
                    self._refuse(408, f"headers not received within {header_timeout:g} s (LATENTCAST_HEADER_TIMEOUT_S)")
                else:
                    self.transport.close()

        def _refuse(self, status: int, detail: str) -> None:
            body = orjson.dumps({"detail": detail, "errors": []})
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}[
                status
            ]
            head = (
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
            )
            self.transport.write(head % (status, reason, len(body)) + body)
            self.transport.close()
            self._in_headers = False

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                window = self._tail + data
                end = window.find(b"\r\n\r\n")
                self._seen += (end + 4 - len(self._tail)) if end >= 0 else len(data)
                self._tail = window[-3:]
                if self._seen > max_header_bytes:
                    self._refuse(
                        431, f"request line and headers over {max_header_bytes} bytes (LATENTCAST_MAX_HEADER_BYTES)"
                    )
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_headers:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._since, self._body_bytes = time.monotonic(), 0
            self._make_room()
            # connections are counted here, not tasks (as uvicorn's own limit does): an evicted upload's task
            # ends a moment after its connection is closed
            over = max_connections is not None and len(self.connections) > max_connections
            self.app = full if over else self._app
            if over and on_evict is not None:
                on_evict("refused")
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_response_complete(self) -> None:
            self._since = time.monotonic()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None
            super().connection_lost(exc)

    return Guarded


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (requests in flight get `shutdown_grace_s` to finish). Returns the exit
    status: 0, or 1 when the models failed to load."""
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def fatal(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=fatal)
    evicted = app.state.latentcast.metrics.connections_evicted

    def on_evict(phase: str) -> None:
        evicted.labels(phase).inc()

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        workers=1,
        http=guarded_protocol(
            settings.header_timeout_s,
            settings.max_header_bytes,
            settings.max_connections,
            on_evict,
            settings.send_timeout_s,
        ),
        timeout_keep_alive=int(max(1, round(settings.keep_alive_s))),
        timeout_graceful_shutdown=int(max(1, round(settings.shutdown_grace_s))),
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    server = uvicorn.Server(config)
    server.run()
    if failure:
        sys.stderr.write(f"latentcast serve: {failure[0]}\n")
        return 1
    return 0
