"""Dependencies of the routes: the service facade, the settings, and who is calling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from kinject.api.auth import (
    ANONYMOUS,
    KeyStore,
    Principal,
    Role,
    is_key_format,
    role_allows,
)
from kinject.api.errors import ApiError
from kinject.api.ratelimit import FailureLimiter, client_key
from kinject.app import KinjectService
from kinject.config import ApiSettings

_bearer = HTTPBearer(auto_error=False, description="an API key (kinject keys create)")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


def get_service(request: Request) -> KinjectService:
    service: KinjectService = request.app.state.service
    return service


def get_api_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.api_settings
    return settings


def get_keys(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.keys
    return keys


def get_auth_limiter(request: Request) -> FailureLimiter:
    limiter: FailureLimiter = request.app.state.auth_limiter
    return limiter


def get_auth_checks(request: Request) -> threading.BoundedSemaphore:
    """Slots for key checks (scrypt) running at once, over all clients."""
    checks: threading.BoundedSemaphore = request.app.state.auth_checks
    return checks


ServiceDep = Annotated[KinjectService, Depends(get_service)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def require(role: Role) -> Callable[..., Principal]:
    """A dependency that lets a request through when its key's role allows ``role``."""

    def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
        header: Annotated[str | None, Security(_header)] = None,
    ) -> Principal:
        presented = header or (bearer.credentials if bearer is not None else None)
        settings = get_api_settings(request)
        if presented is None:
            if role == "read" and not settings.require_key_for_reads:
                return ANONYMOUS
            raise _unauthorized(f"this call needs an API key with role {role!r}: send "
                                "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        if role == "read" and not settings.require_key_for_reads:
            # Reads need no key, so any key is accepted for them, as vLLM, llama.cpp's server
            # and Ollama do: the OpenAI SDK always sends one (users write api_key="EMPTY").
            anyone = _read_principal(request, presented)
            request.state.principal = anyone
            return anyone
        principal = _authenticate(request, presented)
        if principal is None or principal.role is None:
            raise _unauthorized("the API key is unknown or revoked")
        if not role_allows(principal.role, role):
            raise ApiError(403, "forbidden",
                           f"the key {principal.name!r} has role {principal.role!r}; "
                           f"this call needs {role!r}")
        request.state.principal = principal
        return principal

    return check


def _read_principal(request: Request, presented: str) -> Principal:
    """Who a read is from where reads need no key: the key's principal when it is a key
    kinject knows (a read route may show an admin more), else anonymous.

    A key in another format ("EMPTY", "sk-...") is anonymous at once: no scrypt, nothing
    counted. A kinject-format key is checked, but a failure is not counted against the
    client's failure limit (its read goes on, anonymous, and a good write key from the same
    address must not be locked out by it), and with every check slot busy the read goes on
    unchecked rather than waiting. A flood of such keys costs at most the global check slots'
    scrypt, less than the reads themselves cost when anonymous reads are on."""
    keys = get_keys(request)
    principal = keys.cached(presented)
    if principal is not None:
        return principal
    if not is_key_format(presented):
        return ANONYMOUS
    checks = get_auth_checks(request)
    if not checks.acquire(blocking=False):
        return ANONYMOUS
    try:
        principal = keys.authenticate(presented)
    finally:
        checks.release()
    return principal if principal is not None and principal.role is not None else ANONYMOUS


def _authenticate(request: Request, presented: str) -> Principal | None:
    """The key's principal. A key verified before passes at once (no scrypt). Otherwise the
    check takes one of the client's failure slots first (429 when it has none left) and
    gives it back if the key is good, and runs only while a global check slot is free
    (503 when all are busy): neither a burst from one client nor a flood from many can run
    more scrypt than the limits allow."""
    keys = get_keys(request)
    principal = keys.cached(presented)
    if principal is not None:
        return principal
    limiter = get_auth_limiter(request)
    client = client_key(request.client.host if request.client is not None else "-")
    slot = limiter.reserve(client)
    if slot is None:
        wait = limiter.retry_after(client) or 1
        raise ApiError(429, "too_many_requests",
                       f"too many failed API key checks from this client; retry in {wait} s",
                       headers={"Retry-After": str(wait)})
    checks = get_auth_checks(request)
    if not checks.acquire(blocking=False):
        limiter.release(slot)  # not this client's failure
        raise ApiError(503, "unavailable", "too many API key checks in progress; retry in 1 s",
                       headers={"Retry-After": "1"})
    try:
        principal = keys.authenticate(presented)
    finally:
        checks.release()
    if principal is not None:
        limiter.release(slot)
    return principal


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Admin = Annotated[Principal, Depends(require("admin"))]
