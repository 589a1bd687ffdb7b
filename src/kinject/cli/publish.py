"""Commands that publish records to a running broker: ``publish`` (files, JSON lines) and
``ingest-sql`` (the rows of a table or query)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli import progress
from kinject.cli.common import fail, load_settings, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.app.publishing import SqlIngestSummary


def publish(
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="Files, directories (recursed), globs, or - for JSON lines on stdin."),
    ] = None,
    delete: Annotated[
        str | None, typer.Option("--delete", metavar="SOURCE_ID", help="Publish a delete.")
    ] = None,
    source_id: Annotated[
        str | None, typer.Option("--source-id", help="Source id for a single file.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Put in front of every source id.")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Publish files or JSON-lines records to kinject.records (kind sniffed, key = source id).

    Needs a running broker (KINJECT_KAFKA__BOOTSTRAP_SERVERS). With no targets it only
    re-sends what the local outbox still holds for a broker that lost it.
    """
    from kinject.app.publishing import run_publish

    try:
        settings = load_settings(config, data_dir)
        summary = run_publish(
            settings, targets or [], delete=delete, source_id=source_id, prefix=prefix,
            stdin=sys.stdin, progress=progress.files if sys.stderr.isatty() else None,
        )
    except KinjectError as exc:
        raise fail(exc) from exc
    for where, why in summary.failures:
        typer.secho(f"failed: {where}: {why}", fg=typer.colors.RED, err=True)
    if summary.resent:
        typer.echo(f"re-sent {summary.resent} record(s) from the outbox to {summary.topic}")
    line = f"published {summary.published} record(s) to {summary.topic}"
    typer.echo(line + (f"; {summary.failed} failed" if summary.failed else ""))
    if summary.failed:
        raise typer.Exit(code=1)


def ingest_sql(
    url: Annotated[str, typer.Argument(help="SQLAlchemy URL, e.g. sqlite:///shop.db.")],
    key: Annotated[str, typer.Option("--key", help="Column whose value names each row.")],
    table: Annotated[str | None, typer.Option("--table", help="Table to read.")] = None,
    query: Annotated[str | None, typer.Option("--query", help="SELECT to read instead.")] = None,
    watermark: Annotated[
        str | None,
        typer.Option("--watermark", help="Publish only rows whose COL grew since the last run."),
    ] = None,
    source_prefix: Annotated[
        str | None,
        typer.Option("--source-prefix", help="Source ids are PREFIX/KEY (default sql/<table>)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows fetched at a time.")] = 1000,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Publish the rows of a SQL table or query as records (kind sql, one per row).

    Needs a running broker (KINJECT_KAFKA__BOOTSTRAP_SERVERS). With --watermark, the
    greatest value seen is stored in the data dir and the next run reads only newer rows.
    """
    from kinject.app.publishing import run_ingest_sql
    from kinject.app.values import SqlSource

    if (table is None) == (query is None):
        raise usage_error("give exactly one of --table and --query")
    try:
        try:
            source = SqlSource(url=url, key=key, table=table, query=query, watermark=watermark,
                               source_prefix=source_prefix, batch_size=batch_size)
        except ValueError as exc:
            raise usage_error(exc) from exc
        summary = run_ingest_sql(load_settings(config, data_dir), source,
                                 progress=progress.rows if sys.stderr.isatty() else None)
    except KinjectError as exc:
        raise fail(exc) from exc
    _echo_sql_summary(summary)
    if summary.failed:
        raise typer.Exit(code=1)


def _echo_sql_summary(summary: SqlIngestSummary) -> None:
    for where, why in summary.skipped + summary.failures:
        typer.secho(f"skipped: {where}: {why}", fg=typer.colors.YELLOW, err=True)
    if summary.resent:
        typer.echo(f"re-sent {summary.resent} record(s) from the outbox to {summary.topic}")
    line = (f"published {summary.published} of {summary.read} row(s) from {summary.source} "
            f"to {summary.topic}")
    if summary.skipped:
        line += f"; {len(summary.skipped)} skipped (NULL key)"
    if summary.failed:
        line += f"; {summary.failed} failed"
    typer.echo(line)
    if summary.watermark_column:
        before, after = summary.watermark_before, summary.watermark_after
        change = f"{before} -> {after}" if before != after else f"{after} (unchanged)"
        typer.echo(f"watermark {summary.watermark_column}: {change}")
