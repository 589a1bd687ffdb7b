"""The ``kinject`` command. Each command parses its options and calls one plain function.

Nothing heavy is imported at module level, so ``kinject --help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from kinject.errors import BrokerError, KinjectError
from kinject.eval.cli import eval_command

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kinject.api.auth import KeyStore
    from kinject.config import Settings
    from kinject.stream.dlq import DeadLetter
    from kinject.stream.dlq_store import DeadLetterStore

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
    if settings.private_files:
        from kinject.datadir import secure_data_dir

        secure_data_dir(settings.data_dir)
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
    """Run ingest workers (consumer group kinject-ingest) and the corpus materialiser
    (group kinject-corpus-<store id>) until Ctrl-C or SIGTERM."""
    from kinject.stream.runner import run_ingest_workers

    try:
        run_ingest_workers(_settings(config, data_dir), workers, corpus=True)
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

    from kinject.stream.sql_publish import run_ingest_sql
    from kinject.stream.sql_source import SqlSource

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
    """List the latest dead letters: id, time, stage, reason, source, times seen.

    They are read from kinject's durable store (what the topic alone holds is copied in
    first), so they outlive a restart of the embedded broker."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    try:
        letters = _dead_letters(config, data_dir)
    except KinjectError as exc:
        raise _fail(exc) from exc
    shown = letters[-limit:]
    table = Table(title=f"{len(shown)} of {len(letters)} dead letter(s)")
    for col in ("id", "time", "stage", "reason", "source id", "seen"):
        table.add_column(col, overflow="fold")
    for d in shown:
        when = (datetime.datetime.fromtimestamp(d.at).isoformat(" ", "seconds")
                if d.at else "-")
        seen = str(d.seen) + (" (replayed)" if d.replayed_at else "")
        table.add_row(d.id, when, d.stage, d.reason, d.source_id, seen)
    Console().print(table)


@dlq_app.command("show")
def dlq_show(
    offset: Annotated[str, typer.Argument(help="The letter's id (see `kinject dlq list`).")],
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
        str | None, typer.Option("--offset", help="The letter's id (see `kinject dlq list`).")
    ] = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Replay every dead letter not replayed before.")] = False,
    include_replayed: Annotated[bool, typer.Option(
        "--include-replayed", help="With --all: replay letters replayed before as well.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-publish dead letters' original bytes to kinject.records."""
    from kinject.stream.broker import connect
    from kinject.stream.dlq import find_dead_letter, replay
    from kinject.stream.dlq_store import open_dead_letter_store
    from kinject.stream.outbox import Outbox
    from kinject.stream.producer import Producer
    from kinject.stream.publish import OUTBOX_FILE, require_bootstrap

    if (offset is None) == (not all_):
        typer.secho("error: give exactly one of --offset N and --all", fg="red", err=True)
        raise typer.Exit(code=2)
    try:
        settings = _settings(config, data_dir)
        require_bootstrap(settings)
        with connect(settings.kafka) as bootstrap, \
                open_dead_letter_store(settings.data_dir) as store:
            _mirror_dead_letters(settings, bootstrap, store)
            letters = store.latest()
            chosen = ([d for d in letters if include_replayed or d.replayed_at is None]
                      if all_ else [find_dead_letter(letters, offset or "")])
            with (Outbox(settings.data_dir / OUTBOX_FILE) as outbox,
                  Producer(settings.kafka, bootstrap, outbox) as producer):
                sent = replay(producer, chosen)
                topic = producer.topic
            store.mark_replayed(d.row for d in chosen if d.row is not None)
    except KinjectError as exc:
        raise _fail(exc) from exc
    typer.echo(f"replayed {len(sent)} dead letter(s) to {topic}")


def _dead_letters(config: Path | None, data_dir: Path | None) -> list[DeadLetter]:
    """Every stored dead letter, after copying in what only the broker's topic holds (when
    a broker is configured and answers)."""
    from kinject.stream.broker import connect
    from kinject.stream.dlq_store import open_dead_letter_store

    settings = _settings(config, data_dir)
    with open_dead_letter_store(settings.data_dir) as store:
        if settings.kafka.bootstrap_servers:
            try:
                with connect(settings.kafka, timeout_s=10) as bootstrap:
                    _mirror_dead_letters(settings, bootstrap, store)
            except KinjectError as exc:
                typer.secho(f"warning: {exc}; showing the letters stored here", fg="yellow",
                            err=True)
        return store.latest()


def _mirror_dead_letters(settings: Settings, bootstrap: str, store: DeadLetterStore) -> None:
    from kafka.errors import KafkaError

    from kinject.stream.clients import ClusterWatch
    from kinject.stream.dlq import read_dead_letters

    watch = ClusterWatch(settings.kafka, bootstrap)
    try:
        cluster = watch.cluster_id()
    except KafkaError as exc:
        raise BrokerError(f"cannot ask {bootstrap} which cluster it is: {exc}") from exc
    finally:
        watch.close()
    store.mirror(read_dead_letters(settings.kafka, bootstrap), cluster)


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000; 0 picks one).")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", "-n", min=0, help="Ingest workers in this process; 0: a read replica."
    )] = 1,
) -> None:
    """Serve the HTTP API and web page, materialise the index, and run ingest workers."""
    from kinject.serve import run_serve

    try:
        run_serve(_settings(config, data_dir), host, port, workers,
                  on_ready=lambda url: typer.echo(f"kinject serving on {url}"))
    except KinjectError as exc:
        raise _fail(exc) from exc


keys_app = typer.Typer(help="API keys for writes and admin calls (stored hashed).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _key_store(config: Path | None, data_dir: Path | None) -> KeyStore:
    from kinject.api.auth import KEYS_FILE, KeyStore

    settings = _settings(config, data_dir)
    return KeyStore(settings.api.keys_file or settings.data_dir / KEYS_FILE)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    role: Annotated[str, typer.Option("--role", help="read, write or admin.")] = "read",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from kinject.api.auth import ROLES, Role

    if role not in ROLES:
        typer.secho(f"error: --role must be one of {', '.join(ROLES)}", fg="red", err=True)
        raise typer.Exit(code=2)
    try:
        entry, key = _key_store(config, data_dir).create(name, cast(Role, role))
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(key)
    typer.secho(f"key {entry.id} ({entry.name}, {entry.role}) created; it is shown only now",
                err=True)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List keys (id, name, role, created, revoked); secrets are never shown."""
    import datetime

    def when(t: float | None) -> str:
        return datetime.datetime.fromtimestamp(t).isoformat(" ", "seconds") if t else "-"

    for k in _key_store(config, data_dir).keys():
        typer.echo(f"{k.id}  {k.role:<5}  {k.name}  created {when(k.created_at)}  "
                   f"revoked {when(k.revoked_at)}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id, or a name (revokes all by it).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key; a running server refuses it from its next request."""
    gone = _key_store(config, data_dir).revoke(key)
    if not gone:
        typer.secho(f"error: no active key with id or name {key!r}", fg="red", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"revoked {len(gone)} key(s): {', '.join(k.id for k in gone)}")


@app.command()
def conflicts(
    entity: Annotated[str | None, typer.Option("--entity", help="Only this entity.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List contradictions between structured sources: the same entity and field with
    different values, each with its source and record time. The newest value is the one
    search returns; the others stay stored."""
    import datetime
    import json

    from kinject.index.conflicts import read_conflicts

    try:
        settings = _settings(config, data_dir)
    except KinjectError as exc:
        raise _fail(exc) from exc
    found = read_conflicts(settings.data_dir / "index" / "docstore.sqlite", entity)
    if as_json:
        for c in found:
            typer.echo(json.dumps(c.to_dict(), ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(found)} conflict(s)")
    for col in ("entity", "field", "value", "source id", "record time", "searched"):
        table.add_column(col, overflow="fold")
    for c in found:
        for n, v in enumerate(c.values):
            when = datetime.datetime.fromtimestamp(v["ts"]).isoformat(" ", "seconds")
            table.add_row(c.entity if n == 0 else "", c.field if n == 0 else "",
                          str(v["value"]), v["source_id"], when, "yes" if n == 0 else "")
    Console().print(table)


finetune_app = typer.Typer(help="Fine-tuning cycles: train on what arrived, gate, promote.",
                           no_args_is_help=True)
app.add_typer(finetune_app, name="finetune")
adapters_app = typer.Typer(help="Adapter versions: list, show, activate, roll back.",
                           no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


@finetune_app.command("run")
def finetune_run(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run one cycle now: train on what arrived since the serving adapter, gate, promote."""
    import sys

    from kinject.finetune.jobs import JobStore, run_cycle
    from kinject.stream.adapter_events import kafka_announcer

    try:
        settings = _settings(config, data_dir)
        store = JobStore.for_data_dir(settings.data_dir)
        job = store.create(params={"trigger": "cli"})
        with _cycle_progress(sys.stderr.isatty()) as progress:
            result = run_cycle(settings, store=store, job_id=job.id, progress=progress,
                               announce=kafka_announcer(settings))
        store.close()
    except KinjectError as exc:
        raise _fail(exc) from exc
    _echo_cycle(job.id, result.to_dict())


def _echo_cycle(job_id: str, r: dict[str, object]) -> None:
    version = str(r.get("version") or "")[:12] or "-"
    parent = str(r.get("parent") or "")[:12] or "base"
    if r["status"] == "skipped":
        typer.echo(f"job {job_id}: nothing new since corpus cycle {r['corpus_cycle']}; "
                   f"serving {parent}")
        return
    color = typer.colors.GREEN if r["status"] == "promoted" else typer.colors.YELLOW
    typer.secho(f"job {job_id}: {r['status']} {version} (from {parent}, corpus cycle "
                f"{r['corpus_cycle']}, {r['train_examples']} examples, "
                f"{float(r['seconds']):.0f} s)", fg=color)  # type: ignore[arg-type]
    report = r.get("report") or {}
    for reason in report.get("reasons", []) if isinstance(report, dict) else []:
        typer.echo(f"  - {reason}")


class _cycle_progress:  # noqa: N801 (used like a function)
    """A rich progress bar over the training steps, then the gate; off when not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: object = None

    def __enter__(self) -> Callable[[dict[str, Any]], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(),
                       TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("training", total=None)
        self._bar = bar

        def update(event: dict[str, Any]) -> None:
            phase = event.get("phase")
            if phase == "train":
                loss = event.get("loss")
                desc = f"training (loss {loss:.3f})" if isinstance(loss, float) else "training"
                bar.update(task, completed=float(event["step"]),
                           total=float(event["total_steps"]), description=desc)
            elif phase in ("fisher", "gate"):
                bar.update(task, description="EWC Fisher" if phase == "fisher" else
                           "gate: closed-book evaluation")

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # type: ignore[attr-defined]


@finetune_app.command("schedule")
def finetune_schedule(
    every: Annotated[float | None, typer.Option("--every", metavar="MIN", min=0,
                                                help="Run every MIN minutes (0: off).")] = None,
    min_new: Annotated[int | None, typer.Option("--min-new", metavar="N", min=0,
                                                help="Run once N new examples wait (0: off).")
                       ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run cycles on a timer and/or on volume until Ctrl-C or SIGTERM; fill the corpus from
    the configured broker meanwhile (group kinject-corpus-<store id>)."""
    import signal
    import threading

    from kinject.finetune.jobs import JobRecord, run_schedule
    from kinject.stream.adapter_events import kafka_announcer
    from kinject.stream.corpus_runner import corpus_materialiser

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def echo(job: JobRecord) -> None:
        if job.status == "failed":
            typer.secho(f"job {job.id}: failed: {job.error}", fg=typer.colors.RED, err=True)
        else:
            _echo_cycle(job.id, job.result)

    try:
        settings = _settings(config, data_dir)
        with corpus_materialiser(settings):
            ran = run_schedule(settings, stop, every_min=every, min_new=min_new,
                               on_result=echo, announce=kafka_announcer(settings))
    except KeyboardInterrupt:
        ran = -1
    except (KinjectError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    if ran >= 0:
        typer.echo(f"scheduler stopped after {ran} cycle(s)")


@finetune_app.command("jobs")
def finetune_jobs(
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N.")] = 20,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List recent fine-tuning jobs with their status and outcome."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    from kinject.finetune.jobs import JobStore

    store = JobStore.for_data_dir(_settings(config, data_dir).data_dir)
    jobs = store.recent(limit)
    store.close()
    table = Table(title=f"{len(jobs)} fine-tuning job(s)")
    for col in ("job", "created", "status", "stage", "version", "error"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        when = datetime.datetime.fromtimestamp(j.created_at).isoformat(" ", "seconds")
        table.add_row(j.id, when, j.status, j.stage, str(j.result.get("version") or "")[:12],
                      j.error or "")
    Console().print(table)


@adapters_app.command("list")
def adapters_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Every adapter version, oldest first; * marks the one serving."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    from kinject.finetune.registry import AdapterRegistry

    registry = AdapterRegistry.for_data_dir(_settings(config, data_dir).data_dir)
    active = registry.active()
    table = Table(title=f"adapters (serving: {active[:12] if active else 'base model'})")
    for col in ("", "version", "status", "parent", "cycle", "created", "new acc", "sources"):
        table.add_column(col, overflow="fold")
    for v in registry.versions():
        acc = v.metrics.get("new_accuracy")
        table.add_row("*" if v.version == active else "", v.version[:12], v.status,
                      (v.parent or "base")[:12], str(v.corpus_cycle),
                      datetime.datetime.fromtimestamp(v.created_at).isoformat(" ", "seconds"),
                      f"{acc:.2f}" if isinstance(acc, float) else "-", str(len(v.lineage)))
    Console().print(table)


@adapters_app.command("show")
def adapters_show(
    version: Annotated[str, typer.Argument(help="A version or a unique prefix (6+ chars).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One version's manifest: lineage, training config, metrics, gate report."""
    import json
    from dataclasses import asdict

    from kinject.finetune.registry import AdapterRegistry

    try:
        registry = AdapterRegistry.for_data_dir(_settings(config, data_dir).data_dir)
        v = registry.get(version)
    except KinjectError as exc:
        raise _fail(exc) from exc
    out = {**asdict(v), "active": v.version == registry.active(),
           "path": str(registry.path(v.version))}
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=str))


@adapters_app.command("activate")
def adapters_activate(
    version: Annotated[str, typer.Argument(help="A version, a unique prefix, or 'base'.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve VERSION (or the base model) now; replicas follow. Tainted versions are refused."""
    from kinject.service import KinjectService

    try:
        svc = KinjectService(_settings(config, data_dir))
        change = svc.activate(None if version == "base" else version)
    except KinjectError as exc:
        raise _fail(exc) from exc
    typer.echo(f"serving {str(change['version'] or 'base model')[:12]} "
               f"(was {str(change['previous'] or 'base model')[:12]})")


@adapters_app.command("rollback")
def adapters_rollback(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Go back to the adapter that served before the current one (the base model at most)."""
    from kinject.service import KinjectService

    try:
        change = KinjectService(_settings(config, data_dir)).rollback()
    except KinjectError as exc:
        raise _fail(exc) from exc
    typer.echo(f"rolled back to {str(change['version'] or 'base model')[:12]} "
               f"(was {str(change['previous'] or 'base model')[:12]})")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for (any language).")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Hits to show.")] = 5,
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", "-f", metavar="KEY=VALUE",
        help="Repeatable: kind=csv, lang=zh, source=kb/ (id prefix), since=2024-01-01, "
             "until=..., tag=x.")] = None,
    mode: Annotated[str | None, typer.Option(
        help="hybrid (vector + BM25), vector or bm25; default: the index.search_mode "
             "setting.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per hit.")] = False,
    sync: Annotated[bool, typer.Option(
        "--sync/--no-sync",
        help="Catch up from kinject.chunks first when a broker is configured.")] = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Search the knowledge base: ranked chunks with scores, sources and snippets."""
    from kinject.search_cli import print_hits, run_search

    try:
        hits = run_search(_settings(config, data_dir), query, k, filters or [], mode, sync)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    except KinjectError as exc:
        raise _fail(exc) from exc
    print_hits(hits, as_json=as_json)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question (any language).")],
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=1000,
                                          help="Passages to retrieve (default: rag.k).")] = None,
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", "-f", metavar="KEY=VALUE",
        help="Repeatable: kind=csv, lang=zh, source=kb/ (id prefix), since=2024-01-01, "
             "until=..., tag=x.")] = None,
    route: Annotated[str, typer.Option(
        help="rag (retrieval), adapter (closed book), both, or auto.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="The Answer as one JSON object.")
                       ] = False,
    sync: Annotated[bool, typer.Option(
        "--sync/--no-sync",
        help="Catch up from kinject.chunks first when a broker is configured.")] = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Answer a question from the knowledge base, with its numbered sources."""
    from kinject.rag.ask_cli import print_answer, run_ask

    try:
        answer = run_ask(_settings(config, data_dir), question, k, filters or [], route, sync)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    except KinjectError as exc:
        raise _fail(exc) from exc
    print_answer(answer, as_json=as_json)


app.command("eval")(eval_command)


@app.command()
def version() -> None:
    """Print kinject's version."""
    from kinject import __version__

    typer.echo(__version__)


def main() -> None:
    app()
