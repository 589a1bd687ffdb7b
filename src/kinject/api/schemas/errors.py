"""Error bodies, and the error responses every route may give."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable: bad_request, unauthorized, forbidden, not_found, "
                                  "conflict, too_large, unavailable, internal")
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


# Error responses every route may give; FastAPI's own 422 body is replaced by ErrorOut.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what}
    for code, what in (
        (400, "bad request"),
        (401, "missing or unknown API key"),
        (403, "the key's role may not do this"),
        (404, "not found"),
        (413, "request too large"),
        (422, "invalid request"),
        (429, "too many failed API key checks from this client (see Retry-After)"),
        (500, "internal error"),
        (503, "a part kinject needs is unavailable"),
    )
}

