"""The ``kinject`` command. Each command parses its options and calls one plain function.

Nothing heavy is imported at module level, so ``kinject --help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.config import Settings
    from kinject.stream.dlq import DeadLetter

app = typer.Typer(
    name="kinject",
    help="Retrieval-augmented knowledge injection: Kafka -> index -> RAG -> LoRA adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="KINJECT_CONFIG", help="TOML settings file."),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Directory for all durable state.")
]


def _settings(config: Path | None, data_dir: Path | None = None) -> Settings:
    from kinject.config import load_settings
    from kinject.logs import setup_logging

    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    settings = load_settings(config, **overrides)
    setup_logging(settings.log_level)
    return settings


def _fail(exc: KinjectError) -> typer.Exit:
    typer.secho(f"error [{exc.code}]: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def doctor(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Show which parts are installed and resolvable: models, broker, OCR, GPU, data dir."""
    from kinject.doctor import print_report, run_checks

    try:
        settings = _settings(config, data_dir)
    except KinjectError as exc:
        raise _fail(exc) from exc
    checks = run_checks(settings)
    print_report(checks)
    if any(c.status == "missing" and c.required for c in checks):
        raise typer.Exit(code=1)


@app.command()
def broker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 9092,
) -> None:
    """Run the embedded Tansu broker in the foreground (Ctrl-C stops it)."""
    from kinject.stream.broker import serve_foreground

    try:
        settings = _settings(config, data_dir)
        serve_foreground(settings.kafka, port=port,
                         log_file=settings.data_dir / "logs" / "tansu.log")
    except KinjectError as exc:
        raise _fail(exc) from exc


@app.command()
def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    workers: Annotated[int, typer.Option("--workers", "-n", min=1,
                                         help="Workers in this process.")] = 1,
) -> None:
    """Run ingest workers (consumer group kinject-ingest) until Ctrl-C or SIGTERM."""
    from kinject.stream.runner import run_ingest_workers

    try:
        run_ingest_workers(_settings(config, data_dir), workers)
    except KinjectError as exc:
        raise _fail(exc) from exc


@app.command()
def demo(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    keep: Annotated[bool, typer.Option(help="Keep the demo's state from the last run.")] = False,
) -> None:
    """Run the whole road once: broker, sample knowledge, worker, index, answers."""
    from kinject.demo import run_demo

    try:
        settings = _settings(config, data_dir)
        ok = run_demo(settings, fresh=not keep)
    except KinjectError as exc:
        raise _fail(exc) from exc
    if not ok:
        raise typer.Exit(code=1)


@app.command()
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
    import sys

    from kinject.stream.publish import run_publish

    try:
        settings = _settings(config, data_dir)
        summary = run_publish(
            settings, targets or [], delete=delete, source_id=source_id, prefix=prefix,
            stdin=sys.stdin, progress=_progress if sys.stderr.isatty() else None,
        )
    except KinjectError as exc:
        raise _fail(exc) from exc
    for where, why in summary.failures:
        typer.secho(f"failed: {where}: {why}", fg=typer.colors.RED, err=True)
    if summary.resent:
        typer.echo(f"re-sent {summary.resent} record(s) from the outbox to {summary.topic}")
    line = f"published {summary.published} record(s) to {summary.topic}"
    typer.echo(line + (f"; {summary.failed} failed" if summary.failed else ""))
    if summary.failed:
        raise typer.Exit(code=1)


def _progress(files: Sequence[tuple[Path, str]]) -> Iterable[tuple[Path, str]]:
    if len(files) < 2:
        return files
    from rich.console import Console
    from rich.progress import track

    return track(files, description="publishing", console=Console(stderr=True))


@app.command("ingest-sql")
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
    import sys

    from kinject.ingest.sql import SqlSource
    from kinject.stream.sql_publish import run_ingest_sql

    if (table is None) == (query is None):
        typer.secho("error: give exactly one of --table and --query", fg="red", err=True)
        raise typer.Exit(code=2)
    try:
        try:
            source = SqlSource(url=url, key=key, table=table, query=query, watermark=watermark,
                               source_prefix=source_prefix, batch_size=batch_size)
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(code=2) from exc
        settings = _settings(config, data_dir)
        summary = run_ingest_sql(
            settings, source, progress=_row_progress if sys.stderr.isatty() else None
        )
    except KinjectError as exc:
        raise _fail(exc) from exc
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
    if summary.failed:
        raise typer.Exit(code=1)


def _row_progress(rows: Iterable[dict[str, object]]) -> Iterable[dict[str, object]]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("publishing rows: {task.completed}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("rows", total=None)
        for row in rows:
            yield row
            bar.advance(task)


dlq_app = typer.Typer(help="Inspect and replay dead letters (kinject.dlq).",
                      no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N.")] = 50,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the latest dead letters: id (PARTITION:OFFSET), time, stage, reason, source."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    try:
        letters = _dead_letters(config, data_dir)
    except KinjectError as exc:
        raise _fail(exc) from exc
    shown = letters[-limit:]
    table = Table(title=f"{len(shown)} of {len(letters)} dead letter(s)")
    for col in ("id", "time", "stage", "reason", "source id"):
        table.add_column(col, overflow="fold")
    for d in shown:
        when = (datetime.datetime.fromtimestamp(d.at).isoformat(" ", "seconds")
                if d.at else "-")
        table.add_row(d.id, when, d.stage, d.reason, d.source_id)
    Console().print(table)


@dlq_app.command("show")
def dlq_show(
    offset: Annotated[str, typer.Argument(help="PARTITION:OFFSET, or OFFSET if unique.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show one dead letter in full, with the original payload decoded when it is text."""
    import json

    from kinject.stream.dlq import find_dead_letter

    try:
        letter = find_dead_letter(_dead_letters(config, data_dir), offset)
    except KinjectError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(letter.to_dict(), indent=2, ensure_ascii=False))
    text = letter.payload_text()
    if letter.value is None:
        typer.echo("payload: none (a tombstone)")
    elif text is None:
        typer.echo(f"payload: {len(letter.value)} bytes of binary data")
    else:
        typer.echo("payload:\n" + text)


@dlq_app.command("replay")
def dlq_replay(
    offset: Annotated[
        str | None, typer.Option("--offset", help="PARTITION:OFFSET, or OFFSET if unique.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-publish dead letters' original bytes to kinject.records."""
    from kinject.stream.broker import connect
    from kinject.stream.dlq import find_dead_letter, read_dead_letters, replay
    from kinject.stream.outbox import Outbox
    from kinject.stream.producer import Producer
    from kinject.stream.publish import OUTBOX_FILE, require_bootstrap

    if (offset is None) == (not all_):
        typer.secho("error: give exactly one of --offset N and --all", fg="red", err=True)
        raise typer.Exit(code=2)
    try:
        settings = _settings(config, data_dir)
        require_bootstrap(settings)
        with connect(settings.kafka) as bootstrap:
            letters = read_dead_letters(settings.kafka, bootstrap)
            chosen = letters if all_ else [find_dead_letter(letters, offset or "")]
            with (Outbox(settings.data_dir / OUTBOX_FILE) as outbox,
                  Producer(settings.kafka, bootstrap, outbox) as producer):
                sent = replay(producer, chosen)
                topic = producer.topic
    except KinjectError as exc:
        raise _fail(exc) from exc
    typer.echo(f"replayed {len(sent)} dead letter(s) to {topic}")


def _dead_letters(config: Path | None, data_dir: Path | None) -> list[DeadLetter]:
    from kinject.stream.broker import connect
    from kinject.stream.dlq import read_dead_letters
    from kinject.stream.publish import require_bootstrap

    settings = _settings(config, data_dir)
    require_bootstrap(settings)
    with connect(settings.kafka) as bootstrap:
        return read_dead_letters(settings.kafka, bootstrap)


@app.command()
def version() -> None:
    """Print kinject's version."""
    from kinject import __version__

    typer.echo(__version__)


def main() -> None:
    app()
