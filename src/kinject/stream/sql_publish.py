"""The plain function behind ``kinject ingest-sql``: rows of a table or query -> records.

Each row goes through the :class:`~kinject.stream.producer.Producer` with the durable
outbox, like ``kinject publish``. With a watermark column the new maximum (and the digests
of the rows read at it) is stored only after the producer has flushed (every record
acknowledged by the broker), so a run that fails part-way re-reads its rows next time;
re-publishing a row is idempotent downstream. Rows at the stored value are read again and
those already read skipped: a row committed later at the same value is not lost.

A row whose key is NULL, or whose record cannot be published (over the size limit), is
reported and skipped; the watermark still moves past it, since only a change to the row
(which raises its watermark) can make it publishable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kinject.config import Settings
from kinject.errors import BadRecord
from kinject.stream.publish import outbox_producer, require_bootstrap
from kinject.stream.serve_broker import with_serve_broker
from kinject.stream.sql_source import SqlReader, SqlSource, row_digest
from kinject.stream.sql_source import row_record as _row_record
from kinject.stream.sql_watermarks import WATERMARK_FILE, WatermarkStore, later

_log = logging.getLogger(__name__)

# Wraps the stream of rows being published, e.g. in a progress display.
RowProgress = Callable[[Iterator[dict[str, Any]]], Iterable[dict[str, Any]]]


@dataclass
class SqlIngestSummary:
    """What one ``ingest-sql`` run did. ``skipped`` and ``failures`` hold (where, why)."""

    source: str = ""
    topic: str = ""
    read: int = 0
    published: int = 0
    resent: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    watermark_column: str | None = None
    watermark_before: Any = None
    watermark_after: Any = None

    @property
    def failed(self) -> int:
        return len(self.failures)


def run_ingest_sql(
    settings: Settings,
    source: SqlSource,
    *,
    progress: RowProgress | None = None,
    max_record_bytes: int | None = None,
) -> SqlIngestSummary:
    """Publish the rows of ``source`` (only the new ones with a watermark) to kinject.records.

    Raises SqlSourceError for a URL that does not connect or a missing table or column,
    ConfigError without bootstrap servers, BrokerError when Kafka does not acknowledge.
    """
    settings = with_serve_broker(settings)
    require_bootstrap(settings)
    summary = SqlIngestSummary(source=source.describe(), watermark_column=source.watermark)
    with SqlReader(source) as reader:  # connects and checks columns before Kafka is touched
        store = WatermarkStore(settings.data_dir / WATERMARK_FILE) if source.watermark else None
        try:
            since = store.get(source.state_key) if store else None
            # the rows already read at ``since``; the rows at the newest value read now
            seen = store.edge(source.state_key) if store and since is not None else set()
            edge = set(seen)
            summary.watermark_before = summary.watermark_after = since
            with outbox_producer(settings, max_record_bytes) as (producer, resent):
                summary.topic, summary.resent = producer.topic, resent
                # ``>=``: a row committed after the last run at the value it stored counts
                rows = reader.rows(since, inclusive=True)
                newest = since
                shown = progress(rows) if progress else rows
                for n, (row, digest) in enumerate(_unseen(shown, seen), start=1):
                    summary.read = n
                    if source.watermark is not None:
                        value = later(newest, row[source.watermark])
                        if value != newest:
                            newest, edge = value, set()
                        edge.add(digest)
                    try:
                        producer.publish(_row_record(source, row))
                    except BadRecord as exc:
                        where = _where(source, row, n)
                        _log.warning("skipped %s: %s", where, exc)
                        target = summary.skipped if exc.stage == "read" else summary.failures
                        target.append((where, str(exc)))
                    else:
                        summary.published += 1
                producer.flush()  # every record acknowledged: now the watermark may move
                if store is not None and newest is not None and (newest, edge) != (since, seen):
                    store.put(source.state_key, newest, edge)
                    summary.watermark_after = newest
        finally:
            if store is not None:
                store.close()
    _log.info(
        "ingest-sql: %d row(s) read, %d published from %s",
        summary.read,
        summary.published,
        summary.source,
    )
    return summary


def _unseen(rows: Iterable[dict[str, Any]],
            seen: set[str]) -> Iterator[tuple[dict[str, Any], str]]:
    """The rows with their digests, less those read by an earlier run (``seen``)."""
    for row in rows:
        digest = row_digest(row)
        if digest not in seen:
            yield row, digest


def _where(source: SqlSource, row: dict[str, Any], n: int) -> str:
    shown = [c for c in (source.key, source.watermark) if c is not None and row.get(c) is not None]
    return f"row {n}" + (f" ({', '.join(f'{c}={row[c]}' for c in shown)})" if shown else "")
