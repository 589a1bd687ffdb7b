"""A record's ``uri`` reads only what an operator allowed: by default no file and no URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert ingest_config(load_settings()).uris == UriPolicy()  # nothing allowed by default
