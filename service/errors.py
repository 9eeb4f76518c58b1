"""Errors the service answers with: a status, a sentence saying what to change, and where."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An HTTP error with a precise status and a body {"detail": ..., "errors": [...]}."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    def __reduce__(self) -> tuple[type[ServiceError], tuple[int, str, list[dict[str, Any]], dict[str, str]]]:
        return ServiceError, (self.status, self.detail, self.errors, self.headers)  # raised in decode processes

    def oip(self, max_errors: int | None = None) -> str:
        """The Open Inference Protocol's `{"error": ...}` string: the detail, then every listed error (at
        most `max_errors`) as `series 'id': msg`, since OIP has no place for a list."""
        if len(self.errors) <= 1:
            return self.detail
        listed = self.errors if max_errors is None else self.errors[:max_errors]
        lines = [f"series {e.get('series_id')!r}: {e.get('msg')}" for e in listed]
        more = f"; and {len(self.errors) - len(listed)} more" if len(listed) < len(self.errors) else ""
        return f"{self.detail} — " + "; ".join(lines) + more

    def body(self, max_errors: int | None = None) -> dict[str, Any]:
        """The JSON body; at most `max_errors` errors listed, with their total count when cut."""
        if max_errors is None or len(self.errors) <= max_errors:
            return {"detail": self.detail, "errors": self.errors}
        return {"detail": self.detail, "errors": self.errors[:max_errors], "errors_total": len(self.errors)}


def field_error(status: int, msg: str, loc: list[str | int], series_id: str | None = None) -> ServiceError:
    """One bad field: `loc` is its path in the request body, `series_id` the series it belongs to."""
    where = f"series {series_id!r}: " if series_id is not None else ""
    path = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
    return ServiceError(status, f"{where}{path}: {msg}", [{"loc": loc, "msg": msg, "series_id": series_id}])
