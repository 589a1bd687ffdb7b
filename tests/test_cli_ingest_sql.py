"""`kinject ingest-sql`: rows of a real SQLite file onto the real broker; watermarks; errors."""

from __future__ import annotations

import datetime
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.config import KafkaSettings
from kinject.ingest.envelope import decode_record
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.stream.clients import make_consumer
from kinject.stream.topics import Topics, ensure_topics
from kinject.types import Record

runner = CliRunner()


@pytest.fixture()
def env(kafka_bootstrap: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    prefix = "q" + str(abs(hash(request.node.nodeid)) % 10**8)
    ensure_topics(KafkaSettings(topic_prefix=prefix, partitions=2), kafka_bootstrap)
    return {
        "KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINJECT_KAFKA__TOPIC_PREFIX": prefix,
        "KINJECT_KAFKA__PARTITIONS": "2",
        "KINJECT_DATA_DIR": str(tmp_path / "data"),
        "KINJECT_LOG_LEVEL": "DEBUG",
    }


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE products (sku TEXT, name TEXT, price NUMERIC, updated_at DATETIME)")
    db.executemany(
        "INSERT INTO products VALUES (?, ?, ?, ?)",
        [
            ("A1", "Brass lantern", 24.5, "2024-05-01 09:00:00"),
            ("B2", "Tide table 2024", 3, "2024-05-01 09:30:00"),
            ("C3", "Oilskin coat", 89.99, "2024-05-02 12:00:00"),
            (None, "Unlabelled crate", 1, "2024-05-02 13:00:00"),
        ],
    )
    db.commit()
    db.close()
    return path


class _Topic:
    """Reads the records topic from where the last read stopped."""

    def __init__(self, env: dict[str, str]) -> None:
        kafka = KafkaSettings(topic_prefix=env["KINJECT_KAFKA__TOPIC_PREFIX"])
        self._consumer = make_consumer(
            kafka,
            env["KINJECT_KAFKA__BOOTSTRAP_SERVERS"],
            None,
            [Topics.from_settings(kafka).records],
        )

    def read(self, n: int) -> list[Record]:
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            for batch in self._consumer.poll(timeout_ms=200).values():
                got += [decode_record(m.value, m.key) for m in batch]
        got += [
            decode_record(m.value, m.key)
            for b in self._consumer.poll(timeout_ms=500).values()
            for m in b
        ]
        return got

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture()
def topic(env: dict[str, str]) -> Iterator[_Topic]:
    t = _Topic(env)
    yield t
    t.close()


def _ingest(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # the CLI points the root logger at CliRunner's stderr; put pytest's handlers back
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = runner.invoke(app, ["ingest-sql", *args], env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.kafka
def test_watermark_publishes_only_new_and_changed_rows(
    env: dict[str, str], shop: Path, topic: _Topic
) -> None:
    args = [f"sqlite:///{shop}", "--table", "products", "--key", "sku", "--watermark", "updated_at"]
    code, out, err = _ingest(env, *args)
    assert code == 0, out + err
    assert "published 3 of 4 row(s) from table products" in out
    assert "1 skipped (NULL key)" in out
    assert "skipped: row 4 (updated_at=2024-05-02 13:00:00): key column 'sku' is NULL" in err
    assert "watermark updated_at: None -> 2024-05-02 13:00:00" in out
    got = {r.source_id: r for r in topic.read(3)}
    assert sorted(got) == ["sql/products/A1", "sql/products/B2", "sql/products/C3"]
    lantern = got["sql/products/A1"]
    assert (lantern.kind, lantern.meta) == ("sql", {"table": "products", "key": "A1"})
    text = ingest_record(lantern, IngestConfig()).documents[0].text
    assert text.startswith("sku: A1. name: Brass lantern. price: 24.5.")

    code, out, _ = _ingest(env, *args)  # nothing changed: nothing is published
    assert code == 0 and "published 0 of 0 row(s)" in out and "(unchanged)" in out
    assert topic.read(0) == []

    db = sqlite3.connect(shop)
    db.execute("INSERT INTO products VALUES ('D4', 'Foghorn', 150, '2024-05-03 08:00:00')")
    db.execute(
        "UPDATE products SET price = 22, updated_at = '2024-05-03 09:00:00' WHERE sku = 'A1'"
    )
    db.commit()
    db.close()
    # a new process: the watermark comes from the data dir, not from memory
    proc = subprocess.run(
        [sys.executable, "-m", "kinject", "ingest-sql", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "published 2 of 2 row(s)" in proc.stdout
    assert "2024-05-02 13:00:00 -> 2024-05-03 09:00:00" in proc.stdout
    changed = topic.read(2)
    assert sorted(r.source_id for r in changed) == ["sql/products/A1", "sql/products/D4"]
    a1 = next(r for r in changed if r.source_id == "sql/products/A1")
    assert b'"price":"22"' in a1.content


@pytest.mark.kafka
def test_query_with_source_prefix(env: dict[str, str], shop: Path, topic: _Topic) -> None:
    query = "SELECT sku, name FROM products WHERE price > 10"
    code, out, err = _ingest(
        env, f"sqlite:///{shop}", "--query", query, "--key", "sku", "--source-prefix", "catalogue"
    )
    assert code == 0, out + err
    assert "published 2 of 2 row(s) from query query-" in out
    got = topic.read(2)
    assert sorted(r.source_id for r in got) == ["catalogue/A1", "catalogue/C3"]
    docs = [ingest_record(r, IngestConfig()).documents[0].text for r in got]
    assert sorted(docs) == ["sku: A1. name: Brass lantern.", "sku: C3. name: Oilskin coat."]


@pytest.mark.kafka
def test_password_never_appears_in_output_or_logs(
    env: dict[str, str], shop: Path, topic: _Topic
) -> None:
    code, out, err = _ingest(env, f"sqlite:///{shop}", "--table", "products", "--key", "sku")
    assert code == 0, out + err
    assert f"sqlite:///{shop}" in out and len(topic.read(3)) == 3
    for url in (
        f"sqlite://kin:s3cret@/{shop}",  # SQLite refuses a user and password
        "postgresql://kin:s3cret@127.0.0.1:1/shop",
    ):  # no driver installed
        code, out, err = _ingest(
            env, url, "--table", "products", "--key", "sku", "--watermark", "updated_at"
        )  # env logs at DEBUG
        assert code == 2 and "error [" in err, out + err
        assert "kin:***@" in err and "s3cret" not in out + err
        assert "Traceback" not in out + err


@pytest.fixture()
def offline_env(tmp_path: Path) -> dict[str, str]:
    """A broker address nothing listens on: the SQL side must fail before Kafka is used."""
    return {
        "KINJECT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KINJECT_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "ships", "--key", "sku"], "table 'ships' does not exist"),
        (
            ["--table", "products", "--key", "id"],
            "key column 'id' is not in table products at",
        ),
        (
            ["--table", "products", "--key", "sku", "--watermark", "changed"],
            "watermark column 'changed' is not in table products",
        ),
        (["--query", "SELECT nope FROM products", "--key", "sku"], "no such column: nope"),
        (["--key", "sku"], "give exactly one of --table and --query"),
    ],
)
def test_source_problems_are_clear_cli_errors(
    offline_env: dict[str, str], shop: Path, args: list[str], message: str
) -> None:
    code, out, err = _ingest(offline_env, f"sqlite:///{shop}", *args)
    assert code == 2 and message in err, out + err
    assert "Traceback" not in out + err


def test_a_url_that_does_not_connect_is_a_clear_error(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = _ingest(
        offline_env, f"sqlite:///{tmp_path}/missing.db", "--table", "t", "--key", "id"
    )
    assert code == 2 and "the file does not exist" in err and "sql_source_error" in err
    assert not (tmp_path / "missing.db").exists()
    code, _, err = _ingest(offline_env, "sqlite:///relative::junk", "--table", "t", "--key", "id")
    assert code == 2 and "cannot connect" in err
    code, _, err = _ingest(offline_env, "no url at all", "--table", "t", "--key", "id")
    assert code == 2 and "not a valid SQLAlchemy URL" in err


def test_without_bootstrap_servers_is_a_clear_error(
    shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    code, _, err = _ingest(
        {"KINJECT_DATA_DIR": str(tmp_path / "d")},
        f"sqlite:///{shop}",
        "--table",
        "products",
        "--key",
        "sku",
    )
    assert code == 2 and "KINJECT_KAFKA__BOOTSTRAP_SERVERS" in err


@pytest.mark.kafka
def test_a_row_over_the_size_limit_is_reported_and_the_rest_published(
    env: dict[str, str], shop: Path, topic: _Topic
) -> None:
    from kinject.config import load_settings
    from kinject.stream.sql_publish import run_ingest_sql
    from kinject.stream.sql_source import SqlSource

    db = sqlite3.connect(shop)
    db.execute("INSERT INTO products VALUES ('Z9', ?, 1, '2024-05-04 00:00:00')", ("x" * 600,))
    db.commit()
    db.close()
    settings = load_settings(
        None,
        data_dir=Path(env["KINJECT_DATA_DIR"]),
        kafka={
            "bootstrap_servers": env["KINJECT_KAFKA__BOOTSTRAP_SERVERS"],
            "topic_prefix": env["KINJECT_KAFKA__TOPIC_PREFIX"],
        },
    )
    source = SqlSource(url=f"sqlite:///{shop}", table="products", key="sku", watermark="updated_at")
    summary = run_ingest_sql(settings, source, max_record_bytes=500)
    assert summary.published == 3 and summary.read == 5
    assert [w for w, _ in summary.failures] == ["row 5 (sku=Z9, updated_at=2024-05-04 00:00:00)"]
    assert "over the limit" in summary.failures[0][1]
    assert summary.watermark_after == datetime.datetime(2024, 5, 4)
    assert sorted(r.source_id for r in topic.read(3)) == [
        "sql/products/A1",
        "sql/products/B2",
        "sql/products/C3",
    ]


@pytest.mark.kafka
def test_a_row_committed_later_at_the_last_watermark_value_is_published_once(
    env: dict[str, str], shop: Path, topic: _Topic
) -> None:
    """Two writes in the same second share a timestamp: the one committed after a run read
    the first must still be published, by the next run, and by that run only."""
    from kinject.config import load_settings
    from kinject.stream.sql_publish import run_ingest_sql
    from kinject.stream.sql_source import SqlSource

    settings = load_settings(
        None,
        data_dir=Path(env["KINJECT_DATA_DIR"]),
        kafka={
            "bootstrap_servers": env["KINJECT_KAFKA__BOOTSTRAP_SERVERS"],
            "topic_prefix": env["KINJECT_KAFKA__TOPIC_PREFIX"],
            "partitions": 2,
        },
    )
    source = SqlSource(url=f"sqlite:///{shop}", table="products", key="sku", watermark="updated_at")
    first = run_ingest_sql(settings, source)
    assert (first.published, first.watermark_after) == (3, datetime.datetime(2024, 5, 2, 13))
    assert len(topic.read(3)) == 3

    db = sqlite3.connect(shop)  # committed after the run, at the watermark it stored
    db.execute("INSERT INTO products VALUES ('E5', 'Signal flag', 7, '2024-05-02 13:00:00')")
    db.commit()
    db.close()
    second = run_ingest_sql(settings, source)
    assert (second.read, second.published, second.skipped) == (1, 1, [])
    assert [r.source_id for r in topic.read(1)] == ["sql/products/E5"]

    db = sqlite3.connect(shop)  # and a row at that value that changed in place
    db.execute("UPDATE products SET price = 8 WHERE sku = 'E5'")
    db.commit()
    db.close()
    third = run_ingest_sql(settings, source)
    assert (third.read, third.published) == (1, 1)
    (e5,) = topic.read(1)
    assert e5.source_id == "sql/products/E5" and b'"price":"8"' in e5.content

    again = run_ingest_sql(settings, source)  # nothing new: nothing read, nothing re-sent
    assert (again.read, again.published, again.skipped) == (0, 0, [])
    assert topic.read(0) == []
    assert again.watermark_after == datetime.datetime(2024, 5, 2, 13)
