"""AdapterFetcher against local HTTP servers: a version comes in whole and checked, or not at
all: a wrong key, an archive over the size cap, a download over the time cap and a body that
is not an archive each leave the registry as it was, with nothing half-written beside it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from _drip import drip_server
from kinject.finetune.archive import AdapterArchive
from kinject.finetune.fetch import AdapterFetcher, FetchError
from kinject.finetune.registry import AdapterRegistry

KEY = "the-publishers-admin-key"


def _publisher(root: Path) -> tuple[AdapterRegistry, str]:
    src = root / "peft"
    src.mkdir(parents=True)
    (src / "adapter_model.safetensors").write_bytes(b"lora weights " * 500)
    (src / "adapter_config.json").write_text('{"r": 4}', encoding="utf-8")
    reg = AdapterRegistry(root / "adapters")
    return reg, reg.add(src, base_model="tiny", lineage=["kb/a"]).version


@contextmanager
def _archive_server(reg: AdapterRegistry) -> Iterator[str]:
    """Serves ``/v1/adapters/<version>/archive`` of ``reg`` to requests with KEY, as the
    route does (tar stream, Content-Length, the sha256 header)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                self.send_response(401)
                self.end_headers()
                return
            version = self.path.split("/")[3]
            arc = AdapterArchive.open(reg.path(version), version)
            self.send_response(200)
            self.send_header("Content-Length", str(arc.size))
            self.send_header("X-Kinject-Sha256", arc.version)
            self.end_headers()
            for chunk in arc.chunks():
                self.wfile.write(chunk)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _untouched(reg: AdapterRegistry) -> None:
    assert reg.names() == []
    assert list(reg.versions_dir.iterdir()) == []  # no temp file or folder left behind


def test_a_version_is_fetched_checked_and_installed(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    publisher, version = _publisher(tmp_path / "a")
    replica = AdapterRegistry(tmp_path / "b")
    fetcher = AdapterFetcher(replica, api_key=SecretStr(KEY), max_bytes=1 << 20, timeout_s=30)
    with caplog.at_level(logging.DEBUG), _archive_server(publisher) as url:
        assert fetcher.fetch(version, version,
                             f"{url}/v1/adapters/{version}/archive") == version
    assert replica.names() == [version]
    assert replica.get(version).lineage == ("kb/a",)
    assert [p.name for p in replica.versions_dir.iterdir()] == [version]
    assert KEY not in caplog.text


def test_a_wrong_key_is_refused_and_never_shown(tmp_path: Path) -> None:
    publisher, version = _publisher(tmp_path / "a")
    replica = AdapterRegistry(tmp_path / "b")
    fetcher = AdapterFetcher(replica, api_key=SecretStr("not-the-key"), timeout_s=30)
    with _archive_server(publisher) as url, pytest.raises(FetchError) as err:
        fetcher.fetch(version, version, f"{url}/v1/adapters/{version}/archive")
    assert "HTTP 401" in str(err.value) and "fetch_api_key" in str(err.value)
    assert "not-the-key" not in str(err.value)
    _untouched(replica)


def test_an_archive_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    publisher, version = _publisher(tmp_path / "a")
    replica = AdapterRegistry(tmp_path / "b")
    fetcher = AdapterFetcher(replica, api_key=SecretStr(KEY), max_bytes=4000, timeout_s=30)
    with _archive_server(publisher) as url, pytest.raises(FetchError, match="fetch_max_bytes"):
        fetcher.fetch(version, version, f"{url}/v1/adapters/{version}/archive")
    _untouched(replica)


def test_a_download_that_drags_on_is_cut_at_the_time_cap(tmp_path: Path) -> None:
    replica = AdapterRegistry(tmp_path / "b")
    fetcher = AdapterFetcher(replica, max_bytes=1 << 20, timeout_s=1.0)
    version = "ab" * 32
    # one byte every 0.2 s: no single read ever times out, the whole download does
    with drip_server() as url, pytest.raises(FetchError, match="fetch_timeout_s"):
        fetcher.fetch(version, version, f"{url}/m/slow")
    _untouched(replica)


def test_a_body_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    replica = AdapterRegistry(tmp_path / "b")
    fetcher = AdapterFetcher(replica, timeout_s=30)
    version = "cd" * 32
    with drip_server() as url, pytest.raises(FetchError, match="not a readable"):
        fetcher.fetch(version, version, f"{url}/page")
    _untouched(replica)


def test_only_http_urls_and_matching_hashes_are_fetched(tmp_path: Path) -> None:
    replica = AdapterRegistry(tmp_path / "b")
    fetcher = AdapterFetcher(replica)
    version = "ef" * 32
    with pytest.raises(FetchError, match="non-HTTP"):
        fetcher.fetch(version, version, "file:///etc/passwd")
    with pytest.raises(FetchError, match="named by their weights"):
        fetcher.fetch(version, "0" * 64, "http://127.0.0.1:9/x")
    _untouched(replica)


def test_what_a_killed_fetch_left_behind_is_swept_by_the_next_one(tmp_path: Path) -> None:
    """A process killed mid-download (out of memory, a restart) leaves its temporary archive
    and unpacked folder in versions/; the next fetch removes those older than any fetch may
    run, and leaves a fetch that may still be going on alone."""
    import os
    import time

    publisher, version = _publisher(tmp_path / "a")
    replica = AdapterRegistry(tmp_path / "b")
    stale_tar = replica.versions_dir / f".fetch.{version[:16]}.dead.tar"
    stale_tar.write_bytes(b"x" * 1000)
    stale_dir = replica.versions_dir / f".{version}.dead.fetch"
    stale_dir.mkdir()
    (stale_dir / "adapter_model.safetensors").write_bytes(b"y" * 1000)
    old = time.time() - 3600
    for p in (stale_dir / "adapter_model.safetensors", stale_dir, stale_tar):
        os.utime(p, (old, old))
    fresh = replica.versions_dir / f".fetch.{version[:16]}.running.tar"
    fresh.write_bytes(b"z")
    fetcher = AdapterFetcher(replica, api_key=SecretStr(KEY), max_bytes=1 << 20, timeout_s=30)
    with _archive_server(publisher) as url:
        fetcher.fetch(version, version, f"{url}/v1/adapters/{version}/archive")
    assert sorted(p.name for p in replica.versions_dir.iterdir()) == sorted(
        [version, fresh.name])
