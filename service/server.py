"""Running the app under uvicorn with every connection-level resource bounded by a setting.

uvicorn bounds idle keep-alive connections, concurrency and the graceful shutdown, but not how long a
client may take to send a request's headers, nor (with httptools) how large they may be: a client
trickling headers, or sending a 300 MiB one, holds a socket and memory forever. `guarded_protocol`
adds both. A server whose models fail to load exits non-zero at once, with one line saying why.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from latentcast.service.config import Settings
from latentcast.service.main import create_app

log = logging.getLogger("latentcast.service")


def guarded_protocol(header_timeout: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for each request's headers (closed past it; 408 if
    part of them came) and a bound on their size (431), counted as the bytes arrive."""

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._tail = b""
            self._seen = 0
            self._in_headers = False
            self._timer: asyncio.TimerHandle | None = None
            self._arm()

        def _arm(self) -> None:
            self._in_headers, self._seen, self._tail = True, 0, b""
            if self._timer is None:
                self._timer = self.loop.call_later(header_timeout, self._too_slow)

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
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
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
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
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

    config = uvicorn.Config(
        create_app(settings, on_fatal=fatal),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        workers=1,
        http=guarded_protocol(settings.header_timeout_s, settings.max_header_bytes),
        timeout_keep_alive=int(max(1, round(settings.keep_alive_s))),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=int(max(1, round(settings.shutdown_grace_s))),
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    server = uvicorn.Server(config)
    server.run()
    if failure:
        sys.stderr.write(f"latentcast serve: {failure[0]}\n")
        return 1
    return 0
