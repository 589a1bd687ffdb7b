"""Fetch an adapter version a promotion event names but this replica's registry lacks.

The event (finetune/serving.py) carries the version, the sha256 of its weights and, when the
publisher sets ``finetune.publish_url``, the URL of the version's archive
(``GET /v1/adapters/{version}/archive`` on a server of the publisher's data dir). The archive
is downloaded with an admin key (``finetune.fetch_api_key``), bounded in bytes and in time,
into a temporary file beside the registry; unpacked with suspicion (finetune/archive.py) into
a dot-folder of ``versions/`` that the registry ignores; and moved in as a version by one
rename only once its weights hash to the sha256 the event announced. Nothing half-fetched or
mismatched is ever visible as a version.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from kinject.errors import KinjectError
from kinject.finetune.archive import unpack
from kinject.finetune.registry import WEIGHTS, AdapterRegistry, file_sha256

log = logging.getLogger(__name__)

SHA_HEADER = "X-Kinject-Sha256"
ARCHIVE_PATH = "/v1/adapters/{version}/archive"


class FetchError(KinjectError):
    """An adapter version could not be fetched, or its bytes are not what was announced."""

    code = "fetch_error"


def archive_url(publish_url: str, version: str | None) -> str | None:
    """Where replicas fetch ``version`` from a server at ``publish_url``; None without one."""
    if not publish_url or version is None:
        return None
    return publish_url.rstrip("/") + ARCHIVE_PATH.format(version=version)


def _shown(url: str) -> str:
    """The URL for a log line: no user name or password that someone put into it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
           f"{parts.path}"


class AdapterFetcher:
    """Downloads, checks and installs versions into ``registry``; see the module docstring."""

    def __init__(self, registry: AdapterRegistry, *, api_key: SecretStr | None = None,
                 max_bytes: int = 2 << 30, timeout_s: float = 300.0) -> None:
        self.registry = registry
        self.api_key = api_key
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def fetch(self, version: str, sha256: str, url: str) -> str:
        """Install ``version`` from ``url``; returns the version. Raises FetchError (the
        registry unchanged) when the download fails or exceeds its bounds, the archive is
        malformed, or the weights do not hash to ``sha256``."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise FetchError(f"adapter {version[:12]}: refusing to fetch from a non-HTTP URL")
        if sha256 != version:
            raise FetchError(f"adapter {version[:12]}: the event announces sha256 "
                             f"{sha256[:12]}, but versions are named by their weights' hash")
        root = self.registry.versions_dir
        self._sweep(root)
        download = root / f".fetch.{version[:16]}.{uuid.uuid4().hex}.tar"
        unpacked = root / f".{version}.{uuid.uuid4().hex}.fetch"
        t0 = time.monotonic()
        try:
            size = self._download(url, version, download)
            unpacked.mkdir()
            try:
                unpack(download, unpacked, self.max_bytes)
            except KinjectError as exc:
                raise FetchError(f"adapter {version[:12]} from {_shown(url)}: {exc}") from exc
            digest = file_sha256(unpacked / WEIGHTS)
            if digest != sha256:
                raise FetchError(f"adapter {version[:12]} from {_shown(url)}: the weights "
                                 f"hash to {digest[:12]}, not to the announced "
                                 f"{sha256[:12]}; refused")
            try:
                installed = self.registry.install(unpacked)
            except (KinjectError, ValueError, TypeError, KeyError, OSError) as exc:
                raise FetchError(f"adapter {version[:12]} from {_shown(url)} cannot be "
                                 f"installed: {exc}") from exc
        finally:
            download.unlink(missing_ok=True)
            if unpacked.exists():
                shutil.rmtree(unpacked, ignore_errors=True)
        log.info("fetched adapter %s from %s (%d bytes, sha256 checked) in %.1f s",
                 version[:12], _shown(url), size, time.monotonic() - t0)
        return installed

    def _sweep(self, root: Path) -> None:
        """Remove what a fetch killed midway left (its archive, its unpacked folder): those
        untouched for longer than any fetch may run; a fetch going on now is left alone."""
        cutoff = time.time() - 2 * self.timeout_s - 60
        for path in [*root.glob(".fetch.*.tar"), *root.glob(".*.fetch")]:
            try:
                if path.lstat().st_mtime >= cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                log.info("removed %s, left behind by an interrupted adapter fetch", path.name)
            except OSError as exc:  # another process swept it first, or cannot: not ours
                log.debug("cannot remove %s: %s", path, exc)

    def _download(self, url: str, version: str, path: Path) -> int:
        import httpx

        headers = {}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        deadline = time.monotonic() + self.timeout_s
        got = 0
        try:
            with httpx.stream("GET", url, headers=headers, timeout=self.timeout_s,
                              follow_redirects=False) as response:
                if response.status_code != 200:
                    raise FetchError(f"adapter {version[:12]}: {_shown(url)} answered HTTP "
                                     f"{response.status_code}"
                                     + (" (is finetune.fetch_api_key an admin key there?)"
                                        if response.status_code in (401, 403) else ""))
                named = response.headers.get(SHA_HEADER)
                if named is not None and named != version:
                    raise FetchError(f"adapter {version[:12]}: {_shown(url)} sends version "
                                     f"{named[:12]}")
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and (
                        int(declared) > self.max_bytes):
                    raise FetchError(f"adapter {version[:12]}: archive of {int(declared):,} "
                                     f"bytes is over finetune.fetch_max_bytes "
                                     f"({self.max_bytes:,})")
                with path.open("xb") as out:
                    for block in response.iter_bytes():  # as it arrives: the clock is checked
                        got += len(block)
                        if got > self.max_bytes:
                            raise FetchError(f"adapter {version[:12]}: archive passed "
                                             f"finetune.fetch_max_bytes ({self.max_bytes:,})")
                        if time.monotonic() > deadline:
                            raise FetchError(f"adapter {version[:12]}: download took longer "
                                             f"than finetune.fetch_timeout_s "
                                             f"({self.timeout_s:g} s)")
                        out.write(block)
        except httpx.HTTPError as exc:
            raise FetchError(f"adapter {version[:12]}: cannot download from {_shown(url)}: "
                             f"{type(exc).__name__}: {exc}") from exc
        return got
