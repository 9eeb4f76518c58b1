"""Decoding large bodies in worker processes.

Parsing and validating a body is Python that holds the GIL: a 32 MiB JSON body holds it for about a
second, and every request on the event loop waits meanwhile.
Bodies over `LATENTCAST_OFFLOAD_BYTES` are decoded by the same code in a pool of spawned processes
(`LATENTCAST_DECODE_PROCESSES`); only the finished `Job` (numpy arrays, a few lists) comes back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import threading
import zlib
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool

from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.formats import FORMATS, oip
from latentcast.service.runtime import tune_gc
from latentcast.service.validate import Job, Lookup, SpecLookup

# what a decode process can decode, by key: the formats by media type, and the routes' own formats
DECODERS = {**FORMATS, oip.KEY: oip}


def key_of(fmt: object) -> str:
    """The key a format is decoded by (in another process, where only the key travels)."""
    return str(getattr(fmt, "KEY", None) or fmt.MEDIA_TYPE)  # type: ignore[attr-defined]


def _start() -> None:
    """A worker's start: its garbage collector tuned as the server's (a body makes ~10^5 small objects)."""
    tune_gc()


def _ping() -> bool:
    return True


def decode(media: str, coding: str, body: bytes, params: Mapping[str, str], lookup: Lookup, s: Settings) -> Job:
    """The body, inflated if it was sent compressed (within LATENTCAST_MAX_BODY_BYTES), then decoded by its format."""
    return DECODERS[media].decode(inflate(body, coding, s.max_body_bytes), params, lookup, s)


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


MAX_MEMBERS = 1000  # gzip members one body may hold (a real client sends one, a concatenation a few)
_CHUNK = 1 << 16  # compressed bytes fed at a time: what a member's end leaves over stays this small


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """A gzip or deflate body, decompressed to at most `limit` bytes (413 beyond: a small body must not
    become a large one unchecked), or a 400 when it is not a whole stream of that coding. Linear in the
    body: it is fed in chunks, so the end of one gzip member never copies the rest of the body."""
    if coding == "identity":
        return body
    gzip = coding in ("gzip", "x-gzip")
    wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
    if coding == "deflate" and body[:1] and (body[0] & 0x0F) != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, as some clients send it, with no zlib header
    view = memoryview(body)
    parts: list[bytes] = []
    size = pos = members = 0
    while True:  # gzip allows several members one after another (RFC 1952 §2.2)
        members += 1
        if members > MAX_MEMBERS:
            raise ServiceError(400, f"the {coding} body has more than {MAX_MEMBERS} members; send one stream")
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if pos >= len(view):
                raise ServiceError(400, f"the body is not a whole {coding} stream (it ends early)")
            chunk = view[pos : pos + _CHUNK]
            pos += len(chunk)
            try:
                part = inflater.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise ServiceError(400, f"the body is not valid {coding} ({exc})") from None
            size += len(part)
            if size > limit or (not inflater.eof and inflater.unconsumed_tail):
                raise ServiceError(413, f"body over {limit} bytes once decompressed (LATENTCAST_MAX_BODY_BYTES)")
            parts.append(part)
        pos -= len(inflater.unused_data)  # the member ended inside the last chunk
        if pos >= len(view) or not gzip:
            break
    if pos < len(view):
        raise ServiceError(400, f"bytes follow the end of the {coding} stream")
    return b"".join(parts)


class DecodePool:
    """Worker processes that decode bodies; a pool whose worker died (out of memory, killed) is replaced,
    and the request it was decoding is answered 503."""

    def __init__(self, processes: int):
        self.processes = processes
        self._lock = threading.Lock()
        self._pool = self._new()

    def _new(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start
        )

    def warm(self) -> None:
        """Start every worker now (each imports the package: seconds), not on the first large body."""
        for f in [self._pool.submit(_ping) for _ in range(self.processes)]:
            f.result()

    async def decode(
        self, media: str, coding: str, body: bytes, params: Mapping[str, str], lookup: SpecLookup, s: Settings
    ) -> Job:
        """`decode(...)` in a worker process (the specs and settings travel with each body: a few KB)."""
        pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(decode, media, coding, body, dict(params), lookup, s))
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new()
            pool.shutdown(wait=False, cancel_futures=True)
            raise ServiceError(
                503,
                "the process decoding this body stopped (was it out of memory?); retry, or send smaller requests",
                headers={"Retry-After": "2"},
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
