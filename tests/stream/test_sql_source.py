"""SQL rows -> records through SQLAlchemy, against real SQLite files; the watermark store."""

from __future__ import annotations

import datetime
import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from kinject.errors import BadRecord, DependencyMissing, UnsupportedSource
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.stream.sql_source import (
    SqlReader,
    SqlSource,
    SqlSourceError,
    json_safe,
    row_record,
)
from kinject.stream.sql_watermarks import WatermarkStore
from kinject.types import Record


@pytest.fixture()
def lighthouses(tmp_path: Path) -> Path:
    path = tmp_path / "coast.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE lighthouses (code TEXT, name TEXT, keeper TEXT, first_lit DATE, "
        "height NUMERIC, updated_at DATETIME, photo BLOB)"
    )
    db.executemany(
        "INSERT INTO lighthouses VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "GS",
                "Gullspire",
                "Senna Calloway",
                "1902-06-01",
                31.5,
                "2024-05-01 10:00:00",
                b"\x89PNG",
            ),
            ("FL", "Fennick Light", None, "1859-01-01", 20, "2024-05-02 09:00:00", None),
            (None, "Unnamed Rock", "nobody", None, None, "2024-05-03 08:00:00", None),
        ],
    )
    db.commit()
    db.close()
    return path


def _read(source: SqlSource, since: object = None) -> list[dict[str, object]]:
    with SqlReader(source) as reader:
        return list(reader.rows(since))


def test_rows_become_records_with_stable_ids_and_readable_text(lighthouses: Path) -> None:
    source = SqlSource(url=f"sqlite:///{lighthouses}", table="lighthouses", key="code")
    rows = _read(source)
    assert [r["code"] for r in rows] == [None, "FL", "GS"]  # ordered by key
    fl, gs = row_record(source, rows[1]), row_record(source, rows[2])
    assert (gs.source_id, fl.source_id) == ("sql/lighthouses/GS", "sql/lighthouses/FL")
    assert gs.kind == "sql" and gs.meta == {"table": "lighthouses", "key": "GS"}
    assert json.loads(gs.content) == {
        "code": "GS",
        "name": "Gullspire",
        "keeper": "Senna Calloway",
        "first_lit": "1902-06-01",
        "height": "31.5",
        "updated_at": "2024-05-01T10:00:00",
        "photo": {"base64": "iVBORw==", "bytes": 4},
    }
    # reading again gives byte-identical records: a re-run changes nothing downstream
    assert [row_record(source, r) for r in _read(source)[1:]] == [fl, gs]
    with pytest.raises(BadRecord, match="key column 'code' is NULL") as null:
        row_record(source, rows[0])
    assert null.value.stage == "read"

    out = ingest_record(gs, IngestConfig())
    (doc,) = out.documents
    assert doc.text.startswith(
        "code: GS. name: Gullspire. keeper: Senna Calloway. first_lit: 1902-06-01"
    )
    assert "height: 31.5." in doc.text and "base64" not in doc.text and "PNG" not in doc.text
    assert doc.title == "lighthouses: GS"
    assert doc.meta["row"]["photo"] == "4 bytes of binary data"
    assert out.chunks and all(c.source_id == "sql/lighthouses/GS" for c in out.chunks)
    # a NULL column is left out rather than read as "None"
    fl_text = ingest_record(fl, IngestConfig()).documents[0].text
    assert "keeper" not in fl_text and "None" not in fl_text


def test_source_prefix_and_a_query_source(lighthouses: Path) -> None:
    url = f"sqlite:///{lighthouses}"
    query = "SELECT code, name FROM lighthouses WHERE code IS NOT NULL ORDER BY code;"
    source = SqlSource(url=url, query=query, key="code", source_prefix="coast/")
    assert [row_record(source, r).source_id for r in _read(source)] == ["coast/FL", "coast/GS"]
    plain = SqlSource(url=url, query=query, key="code")
    spaced = SqlSource(url=url, query=query.replace(" ", "  ") + "\n", key="code")
    assert plain.prefix == spaced.prefix and plain.prefix.startswith("sql/query-")
    # a watermark on a query filters and orders the query's own rows
    by_name = SqlSource(url=url, query=query, key="code", watermark="name")
    assert [r["code"] for r in _read(by_name, "Fennick Light")] == ["GS"]


def test_watermark_filters_rows_and_orders_them(lighthouses: Path) -> None:
    source = SqlSource(
        url=f"sqlite:///{lighthouses}", table="lighthouses", key="code", watermark="updated_at"
    )
    rows = _read(source)
    assert [r["updated_at"] for r in rows] == sorted(r["updated_at"] for r in rows)
    since = datetime.datetime(2024, 5, 1, 10, 0)
    assert [r["name"] for r in _read(source, since)] == ["Fennick Light", "Unnamed Rock"]


def test_json_safe_values() -> None:
    assert json_safe(Decimal("9.5000000000")) == "9.5"
    assert json_safe(Decimal("1E+2")) == "100"
    assert json_safe(datetime.date(2024, 5, 1)) == "2024-05-01"
    assert json_safe(datetime.datetime(2024, 5, 1, 8, 30)) == "2024-05-01T08:30:00"
    assert json_safe(float("nan")) == "nan"
    assert json_safe(b"\x00\x01") == {"base64": "AAE=", "bytes": 2}
    assert json_safe({"a": [Decimal("1.0"), None]}) == {"a": ["1", None]}


def test_missing_file_table_and_columns_are_clear_errors(lighthouses: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{lighthouses}"
    missing = tmp_path / "nope.db"
    with pytest.raises(SqlSourceError, match="the file does not exist"):
        _read(SqlSource(url=f"sqlite:///{missing}", table="t", key="id"))
    assert not missing.exists()  # SQLite was not allowed to create it
    with pytest.raises(SqlSourceError, match=r"table 'ships' does not exist.*lighthouses"):
        _read(SqlSource(url=url, table="ships", key="id"))
    with pytest.raises(SqlSourceError, match=r"key column 'id' is not in table .*code, name"):
        _read(SqlSource(url=url, table="lighthouses", key="id"))
    with pytest.raises(SqlSourceError, match="watermark column 'changed' is not in"):
        _read(SqlSource(url=url, table="lighthouses", key="code", watermark="changed"))
    with pytest.raises(SqlSourceError, match="no such table: ships"):
        _read(SqlSource(url=url, query="SELECT * FROM ships", key="id"))
    with pytest.raises(SqlSourceError, match="unknown database dialect 'nosuchdb'"):
        _read(SqlSource(url="nosuchdb://h/db", table="t", key="id"))
    with pytest.raises(ValueError, match="exactly one of table and query"):
        SqlSource(url=url, key="id")


def test_passwords_stay_out_of_errors_and_state_keys() -> None:
    with pytest.raises(SqlSourceError) as bad:
        SqlSource(url="not a url s3cret", table="t", key="id")
    assert "s3cret" not in str(bad.value) and "SQLAlchemy URL" in str(bad.value)
    source = SqlSource(
        url="postgresql://kin:s3cret@127.0.0.1:1/shop", table="t", key="id", watermark="v"
    )
    assert "s3cret" not in source.state_key and "kin:***@127.0.0.1:1/shop" in source.state_key
    # a source in a log line or a traceback's locals (its repr) names no password either
    assert "s3cret" not in repr(source) and "kin:***@127.0.0.1:1/shop" in repr(source)
    with pytest.raises((SqlSourceError, DependencyMissing)) as err:
        _read(source)
    assert "s3cret" not in str(err.value)


def test_watermark_store_keeps_types_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "wm.sqlite3"
    values = {
        "int": 41,
        "str": "2024-05-01",
        "decimal": Decimal("3.50"),
        "datetime": datetime.datetime(2024, 5, 1, 10, 0, 0, 250000),
        "date": datetime.date(2024, 5, 1),
        "float": 2.5,
    }
    with WatermarkStore(path) as store:
        assert store.get("int") is None
        for key, value in values.items():
            store.put(key, value)
        store.put("int", 42)
    code = (
        "import sys; from kinject.stream.sql_watermarks import WatermarkStore\n"
        "s = WatermarkStore(sys.argv[1]); print(repr([s.get(k) for k in sys.argv[2:]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), *values], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == repr([42, *list(values.values())[1:]])
    with WatermarkStore(path) as store, pytest.raises(SqlSourceError, match="bytes"):
        store.put("blob", b"x")


def test_sql_kind_that_is_not_a_row_is_unsupported() -> None:
    with pytest.raises(UnsupportedSource, match="ingest-sql"):
        ingest_record(Record("s", kind="sql", content=b"SELECT 1;"), IngestConfig())
