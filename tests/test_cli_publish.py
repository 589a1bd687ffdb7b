"""`kinject publish`: directories, globs, stdin JSON lines, deletes, and the no-broker error."""

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.config import KafkaSettings
from kinject.ingest.envelope import decode_record
from kinject.stream.clients import make_consumer
from kinject.stream.topics import Topics, ensure_topics
from kinject.types import Record

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points the root logger at CliRunner's stderr; put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture()
def env(kafka_bootstrap: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    prefix = "c" + str(abs(hash(request.node.nodeid)) % 10**8)
    ensure_topics(KafkaSettings(topic_prefix=prefix, partitions=2), kafka_bootstrap)
    return {"KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KINJECT_KAFKA__TOPIC_PREFIX": prefix, "KINJECT_KAFKA__PARTITIONS": "2",
            "KINJECT_DATA_DIR": str(tmp_path / "data")}


def _records(env: dict[str, str], n: int) -> list[Record]:
    kafka = KafkaSettings(topic_prefix=env["KINJECT_KAFKA__TOPIC_PREFIX"])
    bootstrap = env["KINJECT_KAFKA__BOOTSTRAP_SERVERS"]
    consumer = make_consumer(kafka, bootstrap, None, [Topics.from_settings(kafka).records])
    got: list[Record] = []
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            got += [decode_record(m.value, m.key) for m in batch]
    got += [decode_record(m.value, m.key) for b in consumer.poll(timeout_ms=300).values()
            for m in b]
    consumer.close()
    return got


@pytest.mark.kafka
def test_publish_a_directory_with_stable_source_ids(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = tmp_path / "kb"
    (kb / "sub").mkdir(parents=True)
    (kb / "otters.txt").write_text("The otter colony counts 41 animals.")
    (kb / "guide.md").write_text("# Guide\nFerries leave at noon.")
    (kb / "sub" / "staff.csv").write_text("name,role\nIda Brook,warden\n")
    (kb / "sub" / "page.html").write_text("<html><body><h1>Shed</h1><p>Oil.</p></body></html>")
    (kb / "sub" / "data.json").write_text('{"shed": {"number": 4}}')
    (kb / "sub" / "staff.csv.meta.json").write_text('{"team": "wardens"}')
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["publish", "kb", "--prefix", "docs/"], env=env)
    assert result.exit_code == 0, result.output
    topic = f"{env['KINJECT_KAFKA__TOPIC_PREFIX']}.records"
    assert f"published 5 record(s) to {topic}" in result.stdout
    got = {r.source_id: r for r in _records(env, 5)}
    assert sorted(got) == ["docs/guide.md", "docs/otters.txt", "docs/sub/data.json",
                           "docs/sub/page.html", "docs/sub/staff.csv"]  # no sidecar record
    assert {r.kind for r in got.values()} == {"text", "markdown", "csv", "html", "json"}
    assert got["docs/sub/staff.csv"].meta["team"] == "wardens"  # the sidecar is merged
    # a single file is named relative to the working directory, or as told
    result = runner.invoke(app, ["publish", "kb/otters.txt"], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["publish", "kb/guide.md", "--source-id", "guide"], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["publish", "kb/sub/*.csv"], env=env)  # a glob
    assert result.exit_code == 0, result.output
    ids = sorted(r.source_id for r in _records(env, 8))
    assert ids == sorted([*got, "kb/otters.txt", "guide", "kb/sub/staff.csv"])


def test_prefixed_source_ids_have_one_slash_for_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinject.errors import ConfigError
    from kinject.stream.publish import collect_files

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "kb").mkdir(parents=True)
    (elsewhere / "notes").mkdir(parents=True)
    (work / "kb" / "a.md").write_text("# A")
    (elsewhere / "notes" / "b.md").write_text("# B")
    monkeypatch.chdir(work)
    far = elsewhere / "notes" / "b.md"
    ids = [sid for _, sid in collect_files(
        ["kb", "kb/a.md", str(work / "kb" / "a.md"), str(far), str(elsewhere / "notes"),
         str(elsewhere / "*" / "b.md")], prefix="docs/")]
    # (the file named both relatively and absolutely, and by a glob, is sent once)
    assert ids == ["docs/a.md", "docs/kb/a.md", "docs" + far.as_posix(), "docs/b.md"]
    assert [sid for _, sid in collect_files([str(far)])] == [far.as_posix()]  # no prefix
    # the same file named twice under the same id is published once
    assert [sid for _, sid in collect_files(["kb", str(work / "kb")])] == ["a.md"]
    # two different files under one id: the second would replace the first, so it is refused
    (elsewhere / "notes" / "a.md").write_text("# another A")
    with pytest.raises(ConfigError, match="would both be published as 'docs/a.md'"):
        collect_files(["kb", str(elsewhere / "notes")], prefix="docs/")


@pytest.mark.kafka
def test_stdin_lines_with_a_bad_one_publish_the_others_and_exit_1(env: dict[str, str]) -> None:
    lines = [json.dumps({"source_id": "kb/a", "content": "Alpha is first."}), "",
             "{not json",
             json.dumps({"content": "no source id"}),
             json.dumps({"source_id": "kb/b", "kind": "markdown", "content": "# Beta"})]
    result = runner.invoke(app, ["publish", "-"], input="\n".join(lines) + "\n", env=env)
    assert result.exit_code == 1
    assert "published 2 record(s)" in result.stdout and "2 failed" in result.stdout
    assert "line 3: record value is not valid UTF-8 JSON" in result.stderr
    assert "line 4: invalid record envelope: source_id" in result.stderr
    got = _records(env, 2)
    assert {(r.source_id, r.content) for r in got} == {("kb/a", b"Alpha is first."),
                                                       ("kb/b", b"# Beta")}


@pytest.mark.kafka
def test_publish_delete_sends_a_delete_envelope(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["publish", "--delete", "kb/gone"], env=env)
    assert result.exit_code == 0, result.output
    (rec,) = _records(env, 1)
    assert (rec.source_id, rec.op) == ("kb/gone", "delete") and rec.ts


def test_publish_without_bootstrap_servers_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    (tmp_path / "a.txt").write_text("hello")
    result = runner.invoke(app, ["publish", str(tmp_path / "a.txt")],
                           env={"KINJECT_DATA_DIR": str(tmp_path / "d")})
    assert result.exit_code == 2
    assert "KINJECT_KAFKA__BOOTSTRAP_SERVERS" in result.stderr
    assert "kinject broker" in result.stderr


def test_publish_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    env = {"KINJECT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "KINJECT_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["publish", str(tmp_path / "nope.txt")], env=env)
    assert result.exit_code == 2 and "nope.txt does not exist" in result.stderr


def test_a_serve_note_names_its_broker_only_while_its_process_lives(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from kinject.config import load_settings
    from kinject.stream.serve_broker import NOTE_FILE, announce, with_serve_broker

    settings = load_settings(data_dir=tmp_path)
    assert with_serve_broker(settings) is settings  # no serve: nothing changes
    with announce(tmp_path, "127.0.0.1:45678"):
        found = with_serve_broker(settings)
        assert found.kafka.bootstrap_servers == "127.0.0.1:45678"
        configured = load_settings(data_dir=tmp_path, kafka={"bootstrap_servers": "k:9092"})
        assert with_serve_broker(configured).kafka.bootstrap_servers == "k:9092"
    assert not (tmp_path / NOTE_FILE).exists()
    # a serve killed with -9 leaves its note behind: a dead pid is not a broker
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / NOTE_FILE).write_text(
        json.dumps({"bootstrap": "127.0.0.1:45678", "pid": int(gone.stdout)}))
    assert os.path.exists(tmp_path / NOTE_FILE)
    assert with_serve_broker(settings).kafka.bootstrap_servers is None


def test_doctor_names_the_broker_of_a_serve_running_on_the_data_dir(tmp_path: Path) -> None:
    # beside a running serve, doctor said "embedded Tansu broker ... (no bootstrap servers
    # set)", as if publish would need a broker of its own
    from kinject.config import load_settings
    from kinject.doctor import check_broker
    from kinject.stream.serve_broker import announce

    settings = load_settings(data_dir=tmp_path)
    assert "no bootstrap servers set" in check_broker(settings).detail
    with announce(tmp_path, "127.0.0.1:45678"):  # this process stands for the serve
        check = check_broker(settings)
    assert check.status == "ok"
    assert "kinject serve" in check.detail and "127.0.0.1:45678" in check.detail
    assert "publish" in check.detail


@pytest.mark.kafka
@pytest.mark.slow
def test_publish_beside_kinject_serve_reaches_its_embedded_broker(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's road: `kinject serve` (embedded broker), then `kinject publish` on the
    same data dir, with no bootstrap servers set anywhere."""
    import httpx

    from _serve import start_serve, wait_ready
    from _wait import until
    from kinject.config import load_settings
    from kinject.stream.serve_broker import NOTE_FILE

    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    data = tmp_path / "data"
    settings = load_settings(
        data_dir=data, kafka={"partitions": 1},
        models={"embedder": "hash", "generator": str(tiny_lm_dir)},
        rag={"mode": "free"}, ingest={"ocr_engine": "none"})
    (tmp_path / "osk.txt").write_text("The Osk lab on Tarrow Island is run by Ilse Varga.")
    url, stop, thread = start_serve(settings)
    try:
        wait_ready(url, timeout_s=180)
        result = runner.invoke(app, ["publish", str(tmp_path / "osk.txt"), "--source-id",
                                     "kb/osk"], env={"KINJECT_DATA_DIR": str(data)})
        assert result.exit_code == 0, result.output
        assert "published 1 record(s)" in result.stdout

        def found() -> bool:
            hits = httpx.get(f"{url}/v1/search", params={"q": "Osk lab Tarrow"},
                             timeout=60).json()["hits"]  # a loaded CI machine: >5 s
            return any(h["source_id"] == "kb/osk" for h in hits)

        until(found, 120, "the published file searchable through serve")
        replay = runner.invoke(app, ["dlq", "replay", "--all"],
                               env={"KINJECT_DATA_DIR": str(data)})
        assert replay.exit_code == 0, replay.output  # dead letters replay there too
        assert "replayed 0 dead letter(s)" in replay.stdout
    finally:
        stop.set()
        thread.join(60)
    assert not (data / NOTE_FILE).exists()
    result = runner.invoke(app, ["publish", str(tmp_path / "osk.txt")],
                           env={"KINJECT_DATA_DIR": str(data)})
    assert result.exit_code == 2 and "kinject serve" in result.stderr


@pytest.mark.parametrize("servers", ["alice:s3cret@127.0.0.1", "alice:s3cret@127.0.0.1:1",
                                     "SASL_SSL://alice:s3cret@127.0.0.1:1"])
def test_a_password_in_the_bootstrap_servers_is_never_shown(
    servers: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A URL with user:password pasted into the bootstrap setting came back in every broker
    # error ("cannot reach the Kafka broker at alice:s3cret@..."), in doctor and in logs.
    from kinject.config import load_settings
    from kinject.doctor import check_broker
    from kinject.errors import KinjectError

    (tmp_path / "a.txt").write_text("hello")
    env = {"KINJECT_KAFKA__BOOTSTRAP_SERVERS": servers, "KINJECT_DATA_DIR": str(tmp_path / "d"),
           "KINJECT_LOG_LEVEL": "DEBUG"}
    caplog.set_level(logging.DEBUG)
    result = runner.invoke(app, ["publish", str(tmp_path / "a.txt")], env=env)
    assert result.exit_code == 2, result.output
    assert "KINJECT_KAFKA__SASL_PASSWORD" in result.stderr  # where a password belongs
    shown = [result.output, result.stderr, caplog.text]
    try:
        shown.append(check_broker(load_settings(data_dir=tmp_path / "d",
                                                kafka={"bootstrap_servers": servers})).detail)
    except KinjectError as exc:
        shown.append(str(exc))
    for text in shown:
        assert "s3cret" not in text


@pytest.mark.kafka
def test_debug_logs_of_the_kafka_clients_keep_the_sasl_password_out(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # kafka-python logs its whole configuration at DEBUG, passwords included; the quoted
    # value of one with a space or a semicolon got past the filter from its first character.
    from kinject.logs import setup_logging

    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level  # an earlier set-up at INFO in this process quietened it
    kafka_log.setLevel(logging.NOTSET)
    setup_logging("DEBUG")
    try:
        _admin_logs_hide(kafka_bootstrap, capsys)
    finally:
        kafka_log.setLevel(level)


def _admin_logs_hide(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pydantic import SecretStr

    from kinject.stream.clients import make_admin

    for secret in ("hunter2", "Zq7 Wv8;Xx9, Yy0", "Rr's=Q9k", 'Tt"Uu'):
        kafka = KafkaSettings(sasl_mechanism="PLAIN", sasl_username="alice",
                              sasl_password=SecretStr(secret))
        make_admin(kafka, kafka_bootstrap).close()
        err = capsys.readouterr().err
        assert "Starting KafkaAdminClient" in err and "sasl_plain_password" in err
        for part in secret.replace(",", " ").replace(";", " ").replace("=", " ").split():
            assert part not in err, part


@pytest.mark.kafka
def test_serve_notes_its_broker_before_it_opens_the_index_and_models(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kinject publish` just after `kinject serve` started said "start `kinject serve` on
    this data dir" for the minute serve spent opening its index and loading models, though
    its broker already ran: the note is written as soon as the broker runs."""
    import os
    import threading

    from kinject.app import KinjectService
    from kinject.config import load_settings
    from kinject.serve import run_serve
    from kinject.stream.serve_broker import running_serve_broker

    opening, release = threading.Event(), threading.Event()
    enter = KinjectService.__enter__

    def held(self: KinjectService) -> KinjectService:  # the index and models still loading
        opening.set()
        release.wait(120)
        return enter(self)

    monkeypatch.setattr(KinjectService, "__enter__", held)
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    data = tmp_path / "data"
    settings = load_settings(
        data_dir=data, kafka={"partitions": 1},
        models={"embedder": "hash", "generator": str(tiny_lm_dir)},
        rag={"mode": "free"}, ingest={"ocr_engine": "none"})
    stop = threading.Event()
    thread = threading.Thread(target=run_serve, args=(settings, "127.0.0.1", 0, 0),
                              kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        assert opening.wait(120), "serve never began to open its service"
        found = running_serve_broker(data)
        assert found is not None and found[1] == os.getpid(), found
        assert found[0].startswith("127.0.0.1:")
    finally:
        release.set()
        stop.set()
        thread.join(60)
    assert running_serve_broker(data) is None  # gone with the serve
