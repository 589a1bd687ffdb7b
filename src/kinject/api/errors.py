"""Where errors become HTTP: every error is ``{"error": {"code": ..., "message": ...}}``.

Core code raises KinjectError subclasses and knows nothing of HTTP; this module alone maps
them (and the framework's own errors) to a status and a stable code.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinject.errors import (
    BadRecord,
    BrokerError,
    Busy,
    ConfigError,
    DependencyMissing,
    IndexFailure,
    KinjectError,
    ModelNotFound,
    NotFound,
)

log = logging.getLogger(__name__)

# The codes clients may rely on.
CODES = ("bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed",
         "conflict", "too_large", "too_many_requests", "unavailable", "internal")

_BY_STATUS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "bad_request",
              429: "too_many_requests", 503: "unavailable"}


class ApiError(Exception):
    """An error the API answers with as it is (auth failures, limits)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def status_of(exc: KinjectError) -> tuple[int, str]:
    """The HTTP status and stable code of a domain error."""
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, BadRecord):
        return 400, "bad_request"
    if isinstance(exc, Busy | BrokerError | IndexFailure | ModelNotFound | DependencyMissing):
        return 503, "unavailable"
    if isinstance(exc, ConfigError):
        return 500, "internal"
    if exc.code == "job_busy":  # a fine-tuning cycle runs already: try again later
        return 409, "conflict"
    if exc.code in ("registry_error", "adapter_load_error"):  # e.g. a tainted adapter named
        return 400, "bad_request"
    return 500, "internal"


def _json(status: int, code: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(KinjectError)
    async def _domain(request: Request, exc: KinjectError) -> JSONResponse:
        status, code = status_of(exc)
        if isinstance(exc, Busy):  # expected under load: the client retries after a while
            return _json(status, code, str(exc), {"Retry-After": str(exc.retry_after_s)})
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _json(status, code, str(exc))

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        return _json(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _json(422, "bad_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _BY_STATUS.get(exc.status_code, "internal" if exc.status_code >= 500
                              else "bad_request")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _json(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s crashed", request.method, request.url.path)
        return _json(500, "internal", "internal error; the server log has the details")
