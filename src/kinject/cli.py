"""The ``kinject`` command. Each command parses its options and calls one plain function.

Nothing heavy is imported at module level, so ``kinject --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.config import Settings

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
def version() -> None:
    """Print kinject's version."""
    from kinject import __version__

    typer.echo(__version__)


def main() -> None:
    app()
