"""Wire formats. Each is one module with `decode(body, params, lookup, settings) → Job`,
`encode(job, forecast) → bytes` and `answer_bytes(job)`, an upper bound on the answer's size known
before solving; adding a format is a new module and one line in `FORMATS`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from latentcast.models import PackedForecast
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.formats import arrow, json
from latentcast.service.validate import Job, Lookup


class Format(Protocol):
    MEDIA_TYPE: str

    def decode(self, body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job: ...

    def encode(self, job: Job, fc: PackedForecast) -> bytes | memoryview: ...

    def answer_bytes(self, job: Job) -> int: ...


FORMATS: dict[str, Format] = {json.MEDIA_TYPE: json, arrow.MEDIA_TYPE: arrow}


def _media(header: str) -> str:
    return header.split(";")[0].strip().lower()


def of_body(content_type: str | None) -> Format:
    """The format of a request body by its Content-Type (none given: JSON); 415 for anything else."""
    media = _media(content_type or json.MEDIA_TYPE)
    if media in FORMATS:
        return FORMATS[media]
    raise ServiceError(
        415,
        f"Content-Type {media!r} is not supported; send one of {sorted(FORMATS)}",
        [{"loc": ["headers", "content-type"], "msg": "unsupported media type", "series_id": None}],
    )


def of_answer(accept: str | None, body: Format) -> Format:
    """The answer's format: the first of Accept's media types that is a format, else the body's."""
    for part in (accept or "").split(","):
        media = _media(part)
        if media in FORMATS:
            return FORMATS[media]
    return body
