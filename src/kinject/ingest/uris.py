"""Which ``uri`` a record may name, and reading it under that policy.

A record on ``kinject.records`` can come from any client of the broker, so a ``uri`` in it is
a request to read a file or fetch a URL *on the worker's machine*. By default nothing is
allowed: ``/etc/passwd`` or the data directory's ``api_keys.json`` named by a record must
never be read and indexed. An operator opens a directory (resolved, so a symlink inside it
that points outside is refused) or a URL prefix with settings
(``KINJECT_INGEST__URI_ALLOW_DIRS``, ``KINJECT_INGEST__URI_ALLOW_URLS``). Directories named
in ``deny_dirs`` (the data directory) are never read, even inside an allowed one.

Whatever a record names, reading it fails as a :class:`BadRecord` (dead-lettered), never as
another exception that would stop the worker: a path with a NUL byte, a URL httpx cannot
parse, a FIFO (opened without blocking and refused: only regular files are read).

``kinject publish`` reads the files its own user names on the publishing machine: it uses
:meth:`UriPolicy.local_files`, which allows any local path and no URL.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from kinject.errors import BadRecord

_MAX_REDIRECTS = 5
_PROC_FD = Path("/proc/self/fd")
# A whole fetch (headers, redirects and body) must end within this: httpx's timeout is per
# read, so a server that drips a byte every few seconds would otherwise never time out. The
# ingest worker reads inside its child process under the record's budget as well.
FETCH_DEADLINE_S = 60.0


@dataclass(frozen=True)
class UriPolicy:
    """Directories and URL prefixes a record's ``uri`` may name; the default allows none.

    ``dirs`` are resolved once here; a file is allowed when its resolved path lies inside one.
    ``url_prefixes`` are http(s) URLs; a URL is allowed when it has the same scheme and host
    and its path lies under the prefix's path (no ``..`` segments), redirects included.
    ``max_bytes`` caps what is read (None: no cap). Nothing under ``deny_dirs`` (resolved;
    the data directory) is ever read, not even inside an allowed directory. A fetch ends
    within ``fetch_deadline_s`` in all.
    """

    dirs: tuple[Path, ...] = ()
    url_prefixes: tuple[str, ...] = ()
    any_local: bool = False
    max_bytes: int | None = None
    deny_dirs: tuple[Path, ...] = ()
    fetch_deadline_s: float = FETCH_DEADLINE_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "dirs", tuple(Path(d).expanduser().resolve() for d in self.dirs))
        object.__setattr__(self, "deny_dirs",
                           tuple(Path(d).expanduser().resolve() for d in self.deny_dirs))
        prefixes = []
        for prefix in self.url_prefixes:
            parsed = urlsplit(prefix)
            if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"an allowed URL prefix must be an http(s) URL, got {prefix!r}")
            prefixes.append(prefix)
        object.__setattr__(self, "url_prefixes", tuple(prefixes))
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        if self.fetch_deadline_s <= 0:
            raise ValueError(f"fetch_deadline_s must be positive, got {self.fetch_deadline_s}")

    @classmethod
    def local_files(cls) -> UriPolicy:
        """Any local file, no URL: for files named by the user who runs ``kinject publish``."""
        return cls(any_local=True)

    def read(self, uri: str) -> tuple[bytes, str]:
        """The bytes ``uri`` names and its file name; BadRecord when refused or unreadable.

        Never anything but BadRecord for what a record names: a ``uri`` that no path or URL
        can hold (a NUL byte, a host httpx refuses) is BadRecord(stage="validate")."""
        try:
            return self._read(uri)
        except BadRecord:
            raise
        except (ValueError, TypeError, UnicodeError) as exc:  # "embedded null byte", ...
            raise BadRecord(f"uri: {uri!r} cannot be read: {exc}", stage="validate") from exc
        except OSError as exc:
            raise BadRecord(f"uri: cannot read {uri!r}: {exc}", stage="fetch") from exc

    def _read(self, uri: str) -> tuple[bytes, str]:
        parsed = urlsplit(uri)
        scheme = parsed.scheme.lower()
        if scheme in ("http", "https"):
            return _fetch_http(uri, self), Path(unquote(parsed.path)).name
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise BadRecord(f"uri: file uri on another host is refused: {uri}",
                                stage="validate")
            path = Path(unquote(parsed.path))
        elif scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive
            raise BadRecord(f"uri: unsupported scheme {scheme!r} (use a local path)",
                            stage="validate")
        else:
            path = Path(uri)
        return self._read_local(path), path.name

    # -- local files -----------------------------------------------------------------------
    def _read_local(self, path: Path) -> bytes:
        if self.any_local:
            return read_file(path, self.max_bytes)
        if not self.dirs:
            raise BadRecord(
                f"uri: reading local files named by a record is off: {path} (allow a directory "
                "with KINJECT_INGEST__URI_ALLOW_DIRS, or send the content itself)",
                stage="validate")
        if not path.is_absolute():
            raise BadRecord(f"uri: a local path must be absolute: {path}", stage="validate")
        resolved = Path(os.path.realpath(path))
        if self._denied(resolved):
            raise BadRecord(f"uri: {path} is inside kinject's data directory, which a record "
                            "may never read", stage="validate")
        if not self._inside(resolved):
            raise BadRecord(f"uri: {path} is outside the allowed directories "
                            "(KINJECT_INGEST__URI_ALLOW_DIRS)", stage="validate")
        # O_NOFOLLOW: a symlink swapped in after the check is not followed; the open file's
        # own path is checked again where the OS tells it (Linux).
        return read_file(resolved, self.max_bytes, nofollow=True, check=self._inside)

    def _inside(self, resolved: Path) -> bool:
        return (any(resolved.is_relative_to(d) for d in self.dirs)
                and not self._denied(resolved))

    def _denied(self, resolved: Path) -> bool:
        return any(resolved.is_relative_to(d) for d in self.deny_dirs)

    # -- URLs ------------------------------------------------------------------------------
    def url_allowed(self, url: str) -> bool:
        """Same scheme and host as an allowed prefix, the path under its path.

        Compared on the path decoded once; refused outright: ``.`` and ``..`` segments (also
        as ``..;x``), a backslash, a ``%`` left after decoding (``%252e``: decoded twice
        by some servers), control characters."""
        try:
            got = urlsplit(url)
        except ValueError:  # "Invalid IPv6 URL", ...
            return False
        path = _normal_path(got.path)
        if got.scheme.lower() not in ("http", "https") or path is None:
            return False
        for prefix in self.url_prefixes:
            want = urlsplit(prefix)
            want_path = unquote(want.path)
            want_path = want_path if want_path.endswith("/") else want_path + "/"
            if (got.scheme.lower() == want.scheme.lower()
                    and got.netloc.lower() == want.netloc.lower()
                    and path.startswith(want_path)):
                return True
        return False


def _normal_path(raw: str) -> str | None:
    """A URL path decoded once, or None when it holds what servers read differently."""
    path = unquote(raw or "/")
    if "\\" in raw or "\\" in path or "%" in path:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in path):
        return None
    if any(seg.split(";", 1)[0] in (".", "..") for seg in path.split("/")):
        return None
    return path


def read_file(path: Path, max_bytes: int | None = None, *, nofollow: bool = False,
              check: Callable[[Path], bool] | None = None) -> bytes:
    """A regular file's bytes; with ``check``, its real path (Linux) must pass it.

    Opened without blocking (a FIFO would block ``open`` until a writer came) and refused
    unless the open file is a regular file, before a byte is read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (os.O_NOFOLLOW if nofollow else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise BadRecord(f"uri: file not found: {path}", stage="fetch") from exc
    except OSError as exc:
        raise BadRecord(f"uri: cannot read {path}: {exc}", stage="fetch") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise BadRecord(f"uri: {str(path)!r} is not a valid path: {exc}",
                        stage="validate") from exc
    with os.fdopen(fd, "rb") as f:
        if check is not None and _PROC_FD.is_dir():
            try:
                really = Path(os.readlink(_PROC_FD / str(fd)))
            except OSError:
                really = path
            if not check(really):
                raise BadRecord(f"uri: {path} moved outside the allowed directories",
                                stage="validate")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadRecord(f"uri: cannot read {path}: not a regular file", stage="fetch")
        try:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except OSError as exc:
            raise BadRecord(f"uri: cannot read {path}: {exc}", stage="fetch") from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise BadRecord(f"uri: {path} is over the limit of {max_bytes:,} bytes", stage="fetch")
    return data


def _fetch_http(uri: str, policy: UriPolicy) -> bytes:
    """GET ``uri`` when the policy allows it, following redirects only to allowed URLs, all
    within ``policy.fetch_deadline_s``."""
    import httpx

    if not policy.url_allowed(uri):
        raise BadRecord(f"uri: fetching {uri} is not allowed (allow a URL prefix with "
                        "KINJECT_INGEST__URI_ALLOW_URLS)", stage="validate")
    deadline = time.monotonic() + policy.fetch_deadline_s
    url = uri
    try:
        with httpx.Client(timeout=min(30.0, policy.fetch_deadline_s),
                          follow_redirects=False) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                with client.stream("GET", url) as resp:
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers.get("location", ""))
                        if not policy.url_allowed(url):
                            raise BadRecord(f"uri: {uri} redirects to {url}, which is not "
                                            "allowed", stage="validate")
                        _check_deadline(deadline, uri, policy.fetch_deadline_s)
                        continue
                    resp.raise_for_status()
                    return _read_capped(resp, uri, policy.max_bytes, deadline,
                                        policy.fetch_deadline_s)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise BadRecord(f"uri: {uri!r} is not a URL that can be fetched: {exc}",
                        stage="validate") from exc
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise BadRecord(f"uri: cannot fetch {uri}: {exc}", stage="fetch") from exc
    raise BadRecord(f"uri: {uri} redirects more than {_MAX_REDIRECTS} times", stage="fetch")


def _check_deadline(deadline: float, uri: str, budget_s: float) -> None:
    if time.monotonic() > deadline:
        raise BadRecord(f"uri: fetching {uri} took longer than {budget_s:g} s in all",
                        stage="fetch")


def _read_capped(resp: object, uri: str, max_bytes: int | None, deadline: float,
                 budget_s: float) -> bytes:
    import httpx

    assert isinstance(resp, httpx.Response)
    data = bytearray()
    for part in resp.iter_bytes():
        data += part
        if max_bytes is not None and len(data) > max_bytes:
            raise BadRecord(f"uri: {uri} is over the limit of {max_bytes:,} bytes",
                            stage="fetch")
        _check_deadline(deadline, uri, budget_s)
    return bytes(data)
