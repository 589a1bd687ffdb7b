"""The FastAPI app around one KinjectService (which the caller opens, attaches and closes).

``create_app(service)`` is all a server needs; ``kinject serve`` runs it with uvicorn beside
the index materialiser and the ingest workers (kinject/serve.py).
"""

from __future__ import annotations

import importlib.resources
import logging
import threading

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinject import __version__
from kinject.api.auth import KEYS_FILE, KeyStore
from kinject.api.errors import ApiError, error_body, install_error_handlers
from kinject.api.metrics import LatencyMiddleware, Metrics
from kinject.api.ratelimit import FailureLimiter
from kinject.api.routes import (
    adapters,
    chat,
    completions,
    embeddings,
    evaluate,
    jobs,
    ops,
    records,
    search,
)
from kinject.app import KinjectService

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuse a body over the limit with kinject's JSON error: at once when its Content-Length
    says so, or as soon as a body without one grows past it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: int) -> ApiError:
        return ApiError(413, "too_large", f"request body of {size:,}+ bytes is over the limit "
                        f"of {self.max_body_bytes:,}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and (
                    int(value) > self.max_body_bytes):
                exc = self._too_large(int(value))
                response = JSONResponse(error_body(exc.code, exc.message), status_code=413)
                await response(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    # Inside the route: FastAPI turns any other error raised while reading
                    # the body into a 400, but passes an HTTPException on to its handler.
                    exc = self._too_large(seen)
                    raise StarletteHTTPException(413, detail=exc.message)
            return message

        await self.app(scope, counted, send)


def create_app(service: KinjectService) -> FastAPI:
    """The API for ``service``; settings come from ``service.settings.api``."""
    api = service.settings.api
    app = FastAPI(
        title="kinject",
        version=__version__,
        summary="Retrieval-augmented knowledge injection: search, ask, publish, observe.",
    )
    app.state.service = service
    app.state.api_settings = api
    keys_file = api.keys_file or service.settings.data_dir / KEYS_FILE
    secret = api.api_key.get_secret_value() if api.api_key is not None else None
    app.state.keys = KeyStore(keys_file, admin_secret=secret)
    app.state.auth_limiter = FailureLimiter(api.auth_max_failures, api.auth_failure_window_s)
    app.state.auth_checks = threading.BoundedSemaphore(api.auth_max_concurrent_checks)
    app.state.metrics = Metrics(service)
    install_error_handlers(app)
    for module in (records, search, chat, completions, embeddings, ops, adapters, jobs,
                   evaluate):
        app.include_router(module.router)

    static = importlib.resources.files("kinject.api") / "static"
    page = (static / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if api.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(api.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(BodyLimit, max_body_bytes=api.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    return app
