"""Wire formats. Each is one module with `decode(body, params, lookup, settings) → Job`,
`decoded_size(body)` (what decoding will handle, to choose its thread), `encode(job, outcome) → bytes`
and `answer_bytes(job)`, an upper bound on the answer's size known before solving; adding a format is
a new module and one line in `FORMATS`. Public: `FORMATS`, `Format`, `of_body`, `of_answer`, the two
formats (`json`, `arrow`) and the types they read and write (`Job`, `Echo`, `ModelSpec`, `Outcome`,
`outcome`: a solved job's answered and refused series)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.formats import arrow, json
from latentcast.service.outcome import Outcome, outcome
from latentcast.service.validate import Echo, Job, Lookup, ModelSpec


class Format(Protocol):
    MEDIA_TYPE: str

    def decode(self, body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job: ...

    def decoded_size(self, body: bytes) -> int: ...

    def encode(self, job: Job, out: Outcome) -> bytes | memoryview: ...

    def answer_bytes(self, job: Job) -> int: ...


FORMATS: dict[str, Format] = {json.MEDIA_TYPE: json, arrow.MEDIA_TYPE: arrow}


def _media(header: str) -> str:
    return header.split(";")[0].strip().lower()


def of_body(content_type: str | None) -> Format:
    """The format of a request body by its Content-Type (none given: JSON); 415 for anything else."""
    media = _media(content_type or json.MEDIA_TYPE)
    charset = re.search(r";\s*charset\s*=\s*\"?([^\";\s]+)", content_type or "", re.IGNORECASE)
    if media == json.MEDIA_TYPE and charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise ServiceError(
            415,
            f"charset {charset.group(1)!r} is not supported: send JSON in UTF-8 (RFC 8259), as "
            "'application/json' or 'application/json; charset=utf-8'",
            [{"loc": ["headers", "content-type"], "msg": "unsupported charset", "series_id": None}],
        )
    if media in FORMATS:
        return FORMATS[media]
    raise ServiceError(
        415,
        f"Content-Type {media!r} is not supported; send one of {sorted(FORMATS)}",
        [{"loc": ["headers", "content-type"], "msg": "unsupported media type", "series_id": None}],
    )


def of_answer(accept: str | None, body: Format) -> Format:
    """The answer's format by Accept (RFC 9110 §12.5.1): the supported media type with the highest q
    above 0, each judged by the most specific range that names it (type/subtype, then type/*, then
    */*); ties go to the body's format. No Accept: the body's format; nothing acceptable: 406."""
    if accept is None or not accept.strip():
        return body
    ranges: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0 or not re.fullmatch(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", value.strip()):
                    raise ServiceError(400, f"Accept: {part.strip()!r} has a q-value that is not a number in [0, 1]")
        ranges[media.lower()] = max(q, ranges.get(media.lower(), -1.0))
    order = [body, *(f for f in FORMATS.values() if f is not body)]
    scored = []
    for rank, fmt in enumerate(order):
        kind = fmt.MEDIA_TYPE.split("/")[0]
        q = next((ranges[m] for m in (fmt.MEDIA_TYPE, f"{kind}/*", "*/*") if m in ranges), 0.0)
        if q > 0:
            scored.append((-q, rank, fmt))
    if not scored:
        raise ServiceError(
            406,
            f"Accept {accept!r} allows none of the answer's formats; accept one of {sorted(FORMATS)}",
            [{"loc": ["headers", "accept"], "msg": "not acceptable", "series_id": None}],
        )
    return min(scored, key=lambda t: (t[0], t[1]))[2]


__all__ = [
    "FORMATS",
    "Echo",
    "Format",
    "Job",
    "ModelSpec",
    "Outcome",
    "arrow",
    "json",
    "of_answer",
    "of_body",
    "outcome",
]
