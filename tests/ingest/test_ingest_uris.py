"""A record's ``uri`` reads only what an operator allowed: by default no file and no URL."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _drip import drip_server
from kinject.errors import BadRecord
from kinject.ingest.envelope import decode_record
from kinject.ingest.uris import UriPolicy


def _value(uri: str) -> bytes:
    return json.dumps({"source_id": "t", "uri": uri}).encode()


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "notes.txt").write_text("The tide gauge at Orrin pier reads in metres.")
    secret = tmp_path / "secret.txt"
    secret.write_text("kj_abcdef_supersecret")
    (allowed / "escape.txt").symlink_to(secret)
    (allowed / "inner").symlink_to(tmp_path)  # a directory link out of the allowed one
    return {"root": tmp_path, "allowed": allowed, "secret": secret}


@pytest.mark.parametrize("uri", ["/etc/passwd", "file:///etc/passwd", "etc/passwd"])
def test_by_default_a_record_reads_no_local_file(uri: str) -> None:
    with pytest.raises(BadRecord, match="reading local files named by a record is off") as info:
        decode_record(_value(uri), None)
    assert info.value.stage == "validate"


def test_a_file_inside_an_allowed_directory_is_read(tree: dict[str, Path]) -> None:
    policy = UriPolicy(dirs=(tree["allowed"],))
    for uri in (str(tree["allowed"] / "notes.txt"), (tree["allowed"] / "notes.txt").as_uri()):
        rec = decode_record(_value(uri), None, uris=policy)
        assert rec.content.startswith(b"The tide gauge")


@pytest.mark.parametrize("name", ["escape.txt", "inner/secret.txt", "../secret.txt"])
def test_nothing_outside_the_allowed_directory_is_read(tree: dict[str, Path], name: str) -> None:
    """A symlink inside the allowed directory, or a ``..``, cannot reach a file outside it."""
    policy = UriPolicy(dirs=(tree["allowed"],))
    with pytest.raises(BadRecord, match="outside the allowed directories") as info:
        decode_record(_value(f"{tree['allowed']}/{name}"), None, uris=policy)
    assert info.value.stage == "validate"
    assert "supersecret" not in str(info.value)


def test_an_allowed_directory_given_through_a_symlink_still_confines(
        tree: dict[str, Path]) -> None:
    link = tree["root"] / "link-to-allowed"
    link.symlink_to(tree["allowed"])
    policy = UriPolicy(dirs=(link,))
    assert decode_record(_value(f"{link}/notes.txt"), None, uris=policy).content
    with pytest.raises(BadRecord, match="outside the allowed"):
        decode_record(_value(f"{link}/escape.txt"), None, uris=policy)


def test_a_relative_path_and_a_device_file_are_refused(tree: dict[str, Path]) -> None:
    policy = UriPolicy(dirs=(tree["allowed"], Path("/dev")))
    with pytest.raises(BadRecord, match="must be absolute"):
        decode_record(_value("notes.txt"), None, uris=policy)
    with pytest.raises(BadRecord, match="not a regular file"):
        decode_record(_value("/dev/zero"), None, uris=policy)


def test_a_file_over_the_size_cap_is_refused(tree: dict[str, Path]) -> None:
    policy = UriPolicy(dirs=(tree["allowed"],), max_bytes=10)
    with pytest.raises(BadRecord, match="over the limit of 10 bytes"):
        decode_record(_value(str(tree["allowed"] / "notes.txt")), None, uris=policy)


def test_urls_need_an_allowed_prefix_with_the_same_host_and_path() -> None:
    with pytest.raises(BadRecord, match="is not allowed") as info:
        decode_record(_value("http://169.254.169.254/latest/meta-data/"), None)
    assert info.value.stage == "validate"
    policy = UriPolicy(url_prefixes=("https://docs.example.com/manuals",))
    assert policy.url_allowed("https://docs.example.com/manuals/a.html")
    assert policy.url_allowed("https://DOCS.example.com/manuals/sub/b.pdf")
    for url in ("https://docs.example.com/manuals-private/a.html",
                "https://docs.example.com.evil.net/manuals/a.html",
                "https://docs.example.com@evil.net/manuals/a.html",
                "http://docs.example.com/manuals/a.html",
                "https://docs.example.com/manuals/../admin",
                "https://docs.example.com/manuals/%2e%2e/admin",
                "file:///docs.example.com/manuals/a"):
        assert not policy.url_allowed(url), url


def test_a_url_prefix_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        UriPolicy(url_prefixes=("ftp://files.example.com/",))


def test_the_publishing_cli_reads_its_own_users_files(tree: dict[str, Path]) -> None:
    """``kinject publish`` reads the files its user names, on the publishing machine."""
    rec = decode_record(_value(str(tree["secret"])), None, uris=UriPolicy.local_files())
    assert rec.content == b"kj_abcdef_supersecret"
    with pytest.raises(BadRecord, match="is not allowed"):
        decode_record(_value("https://example.com/a"), None, uris=UriPolicy.local_files())


def test_the_settings_name_a_bad_url_prefix_and_build_the_workers_policy(
        tree: dict[str, Path]) -> None:
    from kinject.config import load_settings
    from kinject.errors import ConfigError
    from kinject.stream.runner import ingest_config

    with pytest.raises(ConfigError, match="ingest.uri_allow_urls"):
        load_settings(ingest={"uri_allow_urls": ["ftp://files.example.com/"]})
    settings = load_settings(ingest={"uri_allow_dirs": [str(tree["allowed"])],
                                     "uri_allow_urls": ["https://docs.example.com/m/"]})
    policy = ingest_config(settings).uris
    assert policy.dirs == (tree["allowed"].resolve(),)
    assert policy.url_allowed("https://docs.example.com/m/a.html")
    default = ingest_config(load_settings()).uris  # nothing allowed by default
    assert default.dirs == () and default.url_prefixes == () and not default.any_local


# -- what a record names must fail as a BadRecord, never as another exception ----------------

def test_a_uri_no_path_or_url_can_hold_is_a_bad_record(tree: dict[str, Path]) -> None:
    """A NUL byte made os.path.realpath raise ValueError, and a URL httpx cannot parse raised
    httpx.InvalidURL: either escaped the worker's poll loop and stopped it for good."""
    policy = UriPolicy(dirs=(tree["allowed"],),
                       url_prefixes=("https://docs.example.com/m/",))
    for uri in (f"{tree['allowed']}/a\x00b", f"file://{tree['allowed']}/a%00b",
                "https://docs.example.com/m/a?q=\x00", "https://docs.example.com/m/a\x00b"):
        with pytest.raises(BadRecord) as info:
            policy.read(uri)
        assert info.value.stage == "validate", uri


@pytest.mark.parametrize("uri", ["/allowed/a\u0000b", "https://docs.example.com/m/a\r\nHost: x",
                                 "/allowed/a\u0085b"])
def test_the_envelope_refuses_control_characters_in_a_uri(uri: str) -> None:
    with pytest.raises(BadRecord, match="uri: holds a control character") as info:
        decode_record(_value(uri), None, uris=UriPolicy(dirs=(Path("/allowed"),)))
    assert info.value.stage == "validate"


def test_url_paths_that_servers_read_differently_are_refused() -> None:
    policy = UriPolicy(url_prefixes=("https://docs.example.com/m/",))
    assert policy.url_allowed("https://docs.example.com/m/a%20b.html")
    assert policy.url_allowed("https://docs.example.com/%6D/a.html")  # /m/ once decoded
    for url in ("https://docs.example.com/m/..\\x",
                "https://docs.example.com/m/%5c..%5cadmin",
                "https://docs.example.com/m/%252e%252e/x",
                "https://docs.example.com/m/%25",
                "https://docs.example.com/m/..;/admin",
                "https://docs.example.com/m/a%00b",
                "https://[docs.example.com/m/a"):
        assert not policy.url_allowed(url), url


def test_nothing_under_the_data_directory_is_read_even_inside_an_allowed_one(
        tree: dict[str, Path]) -> None:
    """KINJECT_INGEST__URI_ALLOW_DIRS=/data would have let a record read api_keys.json."""
    data = tree["root"] / "data"
    data.mkdir()
    (data / "api_keys.json").write_text('{"ops": "hash-of-the-admin-key"}')
    (tree["allowed"] / "keys-link.json").symlink_to(data / "api_keys.json")
    policy = UriPolicy(dirs=(tree["root"],), deny_dirs=(data,))
    assert policy.read(str(tree["allowed"] / "notes.txt"))[0].startswith(b"The tide")
    for uri in (str(data / "api_keys.json"), str(tree["allowed"] / "keys-link.json"),
                f"{tree['allowed']}/../data/api_keys.json"):
        with pytest.raises(BadRecord, match="data directory") as info:
            policy.read(uri)
        assert info.value.stage == "validate"
        assert "hash-of-the-admin-key" not in str(info.value)


def test_the_settings_refuse_allowed_directories_that_overlap_the_data_directory(
        tmp_path: Path) -> None:
    from kinject.config import load_settings
    from kinject.errors import ConfigError
    from kinject.stream.runner import ingest_config

    data = tmp_path / "data"
    for allowed in (data, tmp_path, data / "corpus"):
        with pytest.raises(ConfigError, match="uri_allow_dirs.*overlaps the data directory"):
            load_settings(data_dir=str(data), ingest={"uri_allow_dirs": [str(allowed)]})
    drop = tmp_path / "drop"
    settings = load_settings(data_dir=str(data), ingest={"uri_allow_dirs": [str(drop)]})
    assert ingest_config(settings).uris.deny_dirs == (data.resolve(),)


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (not hanging it) when it blocks past ``seconds``."""
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_fifo_in_an_allowed_directory_is_refused_without_blocking(
        tree: dict[str, Path]) -> None:
    """open(O_RDONLY) on a FIFO waits for a writer that never comes."""
    fifo = tree["allowed"] / "pipe.txt"
    os.mkfifo(fifo)
    policy = UriPolicy(dirs=(tree["allowed"],))
    with pytest.raises(BadRecord, match="not a regular file") as info:
        _within(20, lambda: policy.read(str(fifo)))
    assert info.value.stage == "fetch"


@pytest.fixture()
def drip() -> Iterator[str]:
    with drip_server() as url:
        yield url


def test_a_fetch_ends_within_its_deadline_however_slowly_the_server_drips(drip: str) -> None:
    """httpx's timeout is per read: a byte every 0.2 s never trips it."""
    policy = UriPolicy(url_prefixes=(f"{drip}/m/",), fetch_deadline_s=1.0)
    assert policy.read(f"{drip}/m/ok")[0].startswith(b"The lamp")
    with pytest.raises(BadRecord, match="took longer than 1 s in all") as info:
        _within(30, lambda: policy.read(f"{drip}/m/slow"))
    assert info.value.stage == "fetch"


def test_a_redirect_is_checked_on_its_normalised_path(drip: str) -> None:
    policy = UriPolicy(url_prefixes=(f"{drip}/m/",))
    with pytest.raises(BadRecord, match="which is not allowed"):
        policy.read(f"{drip}/m/hop")
