"""API keys: created once, shown once, stored only as salted scrypt hashes.

A key reads ``kj_<id>_<secret>``: the id finds its entry in the keys file, the secret is
checked against the entry's scrypt hash in constant time. An unknown or revoked id is checked
against a dummy hash on the same path, so the time of a refusal does not tell which ids exist;
a refused key is remembered for a short time, so sending it again costs no scrypt. Roles are
ordered: ``read`` < ``write`` < ``admin``; a key may do what its role and every lower role
may. The keys file is re-read when it changes on disk, so ``kinject keys revoke`` takes
effect without a restart.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
KEYS_FILE = "api_keys.json"
_PREFIX = "kj_"
# scrypt cost: about 20 ms a check; verified keys are cached in memory by their sha256.
_N, _R, _P = 2**14, 8, 1
# A refused key (its sha256) is refused again without scrypt for this long; a key created
# or un-revoked meanwhile is not affected (another secret, another digest).
FAILED_TTL_S = 60.0
_CACHE_MAX = 4096


def is_key_format(presented: str) -> bool:
    """Whether ``presented`` reads like a key made by ``kinject keys create``."""
    key_id, sep, secret = presented.strip().removeprefix(_PREFIX).partition("_")
    return presented.strip().startswith(_PREFIX) and bool(key_id and sep and secret)


def role_allows(have: Role, need: Role) -> bool:
    return ROLES.index(have) >= ROLES.index(need)


@dataclass(frozen=True)
class ApiKey:
    """A stored key: everything but the secret, which exists only as ``hash``."""

    id: str
    name: str
    role: Role
    salt: str
    hash: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """What may be shown: no salt, no hash."""
        return {"id": self.id, "name": self.name, "role": self.role,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def _scrypt(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P,
                          maxmem=64 * 1024 * 1024, dklen=32).hex()


@functools.cache
def _dummy_key() -> ApiKey:
    """What an unknown id's secret is checked against: the same scrypt, never a match."""
    salt = secrets.token_bytes(16)
    return ApiKey(id="", name="", role="read", salt=salt.hex(),
                  hash=_scrypt(secrets.token_urlsafe(32), salt), created_at=0.0,
                  revoked_at=0.0)


def _verify(secret: str, entry: ApiKey) -> bool:
    """One scrypt and a constant-time comparison against ``entry``'s hash."""
    expected = _scrypt(secret, bytes.fromhex(entry.salt))
    return hmac.compare_digest(expected, entry.hash)


@dataclass(frozen=True)
class Principal:
    """Who made a request: a key's id and name and its role (``anonymous`` has none)."""

    key_id: str
    name: str
    role: Role | None


ANONYMOUS = Principal(key_id="-", name="anonymous", role=None)


class KeyStore:
    """The keys file (JSON, mode 0600). Thread-safe; re-read when its mtime changes."""

    def __init__(self, path: Path, admin_secret: str | None = None) -> None:
        self.path = path
        self._admin_secret = admin_secret
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._verified: dict[str, str] = {}  # sha256(presented key) -> key id
        self._failed: dict[str, float] = {}  # sha256(presented key) -> refused until

    # -- managing --------------------------------------------------------------------------
    def create(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """Make a key; return its stored entry and the key itself (shown once, never kept)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        name = name.strip()
        if not name:
            raise ValueError("a key needs a non-empty name")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        entry = ApiKey(id=key_id, name=name, role=role, salt=salt.hex(),
                       hash=_scrypt(secret, salt), created_at=time.time())
        with self._changing():
            keys = self._read()
            keys[key_id] = entry
            self._write(keys)
        return entry, f"{_PREFIX}{key_id}_{secret}"

    def keys(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._read().values(), key=lambda k: k.created_at)

    def revoke(self, key_id_or_name: str) -> list[ApiKey]:
        """Revoke the key with this id, or every active key with this name; return them."""
        with self._changing():
            keys = self._read()
            hit = [k for k in keys.values() if k.active and key_id_or_name in (k.id, k.name)]
            now = time.time()
            for k in hit:
                keys[k.id] = ApiKey(**{**asdict(k), "revoked_at": now})
            if hit:
                self._write(keys)
                self._verified.clear()
                self._failed.clear()
        return hit

    # -- checking --------------------------------------------------------------------------
    def authenticate(self, presented: str) -> Principal | None:
        """The principal a presented key belongs to, or None when it is unknown or revoked."""
        presented = presented.strip()
        if self._admin_secret and hmac.compare_digest(
            presented.encode("utf-8"), self._admin_secret.encode("utf-8")
        ):
            return Principal(key_id="config", name="KINJECT_API__API_KEY", role="admin")
        if not presented.startswith(_PREFIX):
            return None
        key_id, sep, secret = presented[len(_PREFIX):].partition("_")
        if not sep or not secret:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).hexdigest()
        now = time.monotonic()
        with self._lock:
            self._refresh()
            entry = self._keys.get(key_id)
            known = entry is not None and entry.active
            if known and self._verified.get(digest) == key_id:
                assert entry is not None
                return Principal(key_id=entry.id, name=entry.name, role=entry.role)
            if self._failed.get(digest, 0.0) > now:
                return None
        # A known id, a revoked one and an unknown one take this same path: one scrypt.
        target = entry if known and entry is not None else _dummy_key()
        ok = _verify(secret, target) and target.active
        with self._lock:
            if not ok:
                _bounded(self._failed)[digest] = now + FAILED_TTL_S
                return None
            _bounded(self._verified)[digest] = key_id
        return Principal(key_id=target.id, name=target.name, role=target.role)

    def cached(self, presented: str) -> Principal | None:
        """The principal of a key verified before (no scrypt), or None."""
        presented = presented.strip()
        if self._admin_secret and hmac.compare_digest(
            presented.encode("utf-8"), self._admin_secret.encode("utf-8")
        ):
            return Principal(key_id="config", name="KINJECT_API__API_KEY", role="admin")
        digest = hashlib.sha256(presented.encode("utf-8")).hexdigest()
        with self._lock:
            self._refresh()
            key_id = self._verified.get(digest)
            entry = self._keys.get(key_id) if key_id is not None else None
            if entry is None or not entry.active:
                return None
            return Principal(key_id=entry.id, name=entry.name, role=entry.role)

    # -- the file --------------------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._keys = self._read()
            self._stamp = stamp
            self._verified.clear()
            self._failed.clear()

    def _read(self) -> dict[str, ApiKey]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("cannot read the API keys file %s: %s; no key is accepted", self.path, exc)
            return {}
        keys: dict[str, ApiKey] = {}
        for item in raw.get("keys", []):
            try:
                key = ApiKey(**item)
            except TypeError as exc:
                log.error("skipping a malformed entry in %s: %s", self.path, exc)
                continue
            keys[key.id] = key
        return keys

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Held while the file is read, changed and written back: by one thread of this
        process and one process of the machine (``flock`` on a lock file beside it, released
        by the OS if the process dies), so two ``kinject keys create`` at once keep both."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        with self._lock, lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, keys: dict[str, ApiKey]) -> None:
        body = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2)
        # A temporary file of its own (mode 0600), renamed over the file: readers see the
        # old keys or the new ones, never a part.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None  # re-read on the next check


def _bounded(cache: dict[str, Any]) -> dict[str, Any]:
    """``cache``, emptied when it has grown past its bound (a flood of distinct keys)."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    return cache
