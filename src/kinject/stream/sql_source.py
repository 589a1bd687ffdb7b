"""Rows of a SQL table or query, read through SQLAlchemy, as records of kind ``sql``.

A row becomes one record: ``source_id`` = ``<prefix>/<key value>`` (prefix defaults to
``sql/<table>`` or ``sql/query-<hash>``), content = the row as a JSON object with values
made JSON-safe (dates ISO-8601, decimals as strings, bytes as a ``{"base64", "bytes"}``
note), meta = ``{"table": ..., "key": ...}``. Any SQLAlchemy URL works when its driver is
installed; SQLite works out of the box.

With a watermark column only rows whose watermark is at least the last stored value are
read. :class:`~kinject.stream.sql_watermarks.WatermarkStore` keeps that value durably
(SQLite in the data directory), keyed by the URL without its password, the table or query,
and the column, with the digests of the rows read at that value: a row committed later at
the same value (two writes in one second) is published by the next run, the rows already
published are not. Rows that change without raising their watermark are seen only while
their watermark is the last value: use a column every write raises (a version, or an
update timestamp).

The password of a URL never appears in a log line, an error or a state key.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.errors import BadRecord, DependencyMissing, KinjectError
from kinject.types import Record

if TYPE_CHECKING:
    from sqlalchemy import URL, Connection, Engine
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.elements import ColumnClause

_log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
_QUERY_ALIAS = "kinject_q"


class SqlSourceError(KinjectError):
    """A SQL source cannot be read: bad URL, no connection, missing table or column."""

    code = "sql_source_error"


def _parse_url(url: str) -> URL:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError as exc:  # the string itself may hold a password: never echo it
        raise SqlSourceError(
            "the database URL is not a valid SQLAlchemy URL "
            "(expected dialect[+driver]://user:password@host/database, or sqlite:///path.db)"
        ) from exc


@dataclass(frozen=True)
class SqlSource:
    """What to read: a URL and exactly one of ``table`` and ``query``, keyed by ``key``."""

    url: str
    key: str
    table: str | None = None
    query: str | None = None
    watermark: str | None = None
    source_prefix: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table and query")
        if self.table is not None and not self.table.strip():
            raise ValueError(f"table must not be blank, got {self.table!r}")
        if self.query is not None and not self.query.strip().rstrip(";").strip():
            raise ValueError(f"query must not be blank, got {self.query!r}")
        if not self.key.strip():
            raise ValueError(f"key must name a column, got {self.key!r}")
        if self.watermark is not None and not self.watermark.strip():
            raise ValueError(f"watermark must name a column, got {self.watermark!r}")
        if self.source_prefix is not None and not self.source_prefix.strip("/ "):
            raise ValueError(f"source_prefix must not be blank, got {self.source_prefix!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        _parse_url(self.url)  # fail early, without echoing the URL

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden (``***``); SQLite paths made absolute."""
        url = _parse_url(self.url)
        db = url.database
        if (
            url.get_backend_name() == "sqlite"
            and db
            and db != ":memory:"
            and not (db.startswith("file:"))
        ):
            url = url.set(database=Path(db).expanduser().resolve().as_posix())
        return url.render_as_string(hide_password=True)

    @property
    def query_text(self) -> str:
        return (self.query or "").strip().rstrip(";").strip()

    @property
    def name(self) -> str:
        """The table, or ``query-<hash of the query>``."""
        if self.table is not None:
            return self.table
        digest = hashlib.sha256(" ".join(self.query_text.split()).encode("utf-8"))
        return f"query-{digest.hexdigest()[:12]}"

    @property
    def prefix(self) -> str:
        return (self.source_prefix or f"sql/{self.name}").rstrip("/")

    @property
    def state_key(self) -> str:
        """Where the watermark is kept: URL without password, table or query, column."""
        what = f"table={self.table}" if self.table is not None else f"query={self.name}"
        return f"{self.safe_url} {what} watermark={self.watermark}"

    def describe(self) -> str:
        what = f"table {self.table}" if self.table is not None else f"query {self.name}"
        return f"{what} at {self.safe_url}"

    def __repr__(self) -> str:  # the dataclass's would show the URL's password
        return (f"SqlSource(url={self.safe_url!r}, key={self.key!r}, table={self.table!r}, "
                f"query={self.query!r}, watermark={self.watermark!r}, "
                f"source_prefix={self.source_prefix!r}, batch_size={self.batch_size!r})")


def json_safe(value: Any) -> Any:
    """A JSON-serialisable form of a column value (dates ISO, decimals str, bytes a note)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        text = format(value.normalize(), "f")  # 9.5000000000 -> 9.5, 1E+2 -> 100
        return "0" if text in ("-0", "0") else text
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return {"base64": base64.b64encode(data).decode("ascii"), "bytes": len(data)}
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, uuid.UUID | datetime.timedelta):
        return str(value)
    return str(value)


def row_json(row: Mapping[str, Any]) -> str:
    """The row as a compact JSON object: a record's content."""
    return json.dumps(
        {str(col): json_safe(v) for col, v in row.items()},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def row_digest(row: Mapping[str, Any]) -> str:
    """The sha256 of :func:`row_json`: which rows at the last watermark value were read."""
    return hashlib.sha256(row_json(row).encode("utf-8")).hexdigest()


def row_record(source: SqlSource, row: Mapping[str, Any]) -> Record:
    """The record for one row. Raises BadRecord when the key is NULL or empty."""
    key = json_safe(row[source.key])
    if key is None or (isinstance(key, str) and not key.strip()):
        raise BadRecord(f"key column {source.key!r} is NULL", stage="read")
    if isinstance(key, dict | list):
        raise BadRecord(f"key column {source.key!r} holds {type(key).__name__}", stage="read")
    key_text = str(key)
    content = row_json(row)
    return Record(
        source_id=f"{source.prefix}/{key_text}",
        kind="sql",
        content=content.encode("utf-8"),
        meta={"table": source.name, "key": key_text},
    )


def _message(exc: BaseException, url: URL) -> str:
    """The driver's own message (not SQLAlchemy's wrapper), with the password scrubbed."""
    orig = getattr(exc, "orig", None)
    raw = str(orig if orig is not None else exc).strip()
    text = raw.splitlines()[0] if raw else ""
    if url.password:
        text = text.replace(str(url.password), "***")
    return text or type(exc).__name__


class SqlReader:
    """Streams the rows of a :class:`SqlSource`. Use as a context manager: entering connects
    and checks the table and columns (SqlSourceError naming the problem)."""

    def __init__(self, source: SqlSource) -> None:
        self.source = source
        self.columns: list[str] = []
        self._url = _parse_url(source.url)
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._base: Any = None  # the Table, or the query as a subquery

    def __enter__(self) -> SqlReader:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _open(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

        where = self.source.safe_url
        url = self._url
        if url.get_backend_name() == "sqlite":
            db = url.database
            # SQLite would create a missing file; a typo in the path must be an error instead.
            if db and db != ":memory:" and not db.startswith("file:"):
                if not Path(db).expanduser().is_file():
                    raise SqlSourceError(f"cannot connect to {where}: the file does not exist")
        try:
            self._engine = create_engine(url)
        except NoSuchModuleError as exc:
            raise SqlSourceError(f"unknown database dialect {url.drivername!r} in {where}") from exc
        except ImportError as exc:
            raise DependencyMissing(
                f"cannot connect to {where}: the database driver for {url.drivername!r} is "
                f"not installed ({exc}); install the DBAPI package that SQLAlchemy's "
                f"{url.get_backend_name()} dialect needs into kinject's environment"
            ) from exc
        except SQLAlchemyError as exc:
            raise SqlSourceError(f"cannot use {where}: {_message(exc, url)}") from exc
        try:
            self._conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise SqlSourceError(f"cannot connect to {where}: {_message(exc, url)}") from exc
        try:
            self._resolve()
        except SQLAlchemyError as exc:
            raise SqlSourceError(
                f"cannot read {self.source.describe()}: {_message(exc, url)}"
            ) from exc
        self._check_columns()

    def _resolve(self) -> None:
        from sqlalchemy import MetaData, Table, inspect, literal_column, select, text

        assert self._conn is not None
        if self.source.table is not None:
            name, schema = self.source.table, None
            inspector = inspect(self._conn)
            if not inspector.has_table(name) and "." in name:
                schema, name = name.rsplit(".", 1)
            if not inspector.has_table(name, schema=schema):
                tables = sorted(inspector.get_table_names())
                known = ", ".join(tables[:20]) + (", ..." if len(tables) > 20 else "")
                raise SqlSourceError(
                    f"table {self.source.table!r} does not exist in {self.source.safe_url}"
                    f" (tables: {known or 'none'})"
                )
            self._base = Table(name, MetaData(), autoload_with=self._conn, schema=schema)
            self.columns = [c.name for c in self._base.columns]
        else:
            self._base = text(self.source.query_text).columns().subquery(_QUERY_ALIAS)
            probe: Select[Any] = select(literal_column("*")).select_from(self._base).limit(0)
            self.columns = list(self._conn.execute(probe).keys())

    def _check_columns(self) -> None:
        for role, col in (("key", self.source.key), ("watermark", self.source.watermark)):
            if col is not None and col not in self.columns:
                raise SqlSourceError(
                    f"{role} column {col!r} is not in {self.source.describe()}"
                    f" (columns: {', '.join(self.columns)})"
                )

    def _select(self, since: Any, inclusive: bool) -> Select[Any]:
        from sqlalchemy import literal_column, select

        wm = self.source.watermark
        if self.source.table is not None:
            table = self._base
            stmt = select(table)
            if wm is not None:
                if since is not None:
                    col = table.c[wm]
                    stmt = stmt.where(self._at_least(col, since) if inclusive else col > since)
                return stmt.order_by(table.c[wm], table.c[self.source.key])
            return stmt.order_by(table.c[self.source.key])
        stmt = select(literal_column("*")).select_from(self._base)
        if wm is not None:
            assert self._conn is not None
            quoted: ColumnClause[Any] = literal_column(
                self._conn.dialect.identifier_preparer.quote(wm)
            )
            if since is not None:
                stmt = stmt.where(self._at_least(quoted, since) if inclusive else quoted > since)
            stmt = stmt.order_by(quoted)
        return stmt

    def _at_least(self, col: Any, since: Any) -> Any:
        """``col >= since``. SQLite keeps dates and times as text and SQLAlchemy binds a
        datetime with microseconds ('... 13:00:00.000000'), which sorts after the stored
        '... 13:00:00' of the same instant: compare them as Julian day numbers there."""
        from sqlalchemy import func

        if self._url.get_backend_name() == "sqlite" and isinstance(
            since, datetime.date | datetime.time
        ):
            return func.julianday(col) >= func.julianday(since.isoformat())
        return col >= since

    def rows(self, since: Any = None, *, inclusive: bool = False) -> Iterator[dict[str, Any]]:
        """Every row (with a watermark: every row whose watermark is greater than ``since``,
        or equal to it too when ``inclusive``), streamed ``batch_size`` at a time."""
        from sqlalchemy.exc import SQLAlchemyError

        if self._conn is None:
            raise RuntimeError("SqlReader is not open; use it as a context manager")
        conn = self._conn.execution_options(yield_per=self.source.batch_size)
        try:
            result = conn.execute(self._select(since, inclusive))
            for batch in result.mappings().partitions():
                for row in batch:
                    yield dict(row)
        except SQLAlchemyError as exc:
            raise SqlSourceError(
                f"reading {self.source.describe()} failed: {_message(exc, self._url)}"
            ) from exc
