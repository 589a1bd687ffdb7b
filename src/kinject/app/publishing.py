"""Records into ``kinject.records`` from any edge: files and JSON lines (run_publish), the
rows of a SQL table or query (run_ingest_sql), and a posted envelope checked as the ingest
worker checks one read from Kafka (decode_record). They live in stream/ and ingest/; the
edges call them through here."""

from kinject.ingest.envelope import decode_record
from kinject.stream.publish import PublishSummary, run_publish
from kinject.stream.serve_broker import with_serve_broker
from kinject.stream.sql_publish import SqlIngestSummary, run_ingest_sql

__all__ = ["PublishSummary", "SqlIngestSummary", "decode_record", "run_ingest_sql",
           "run_publish", "with_serve_broker"]
