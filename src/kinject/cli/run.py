"""Commands that run until stopped: ``serve``, ``worker``, ``broker``, and ``demo`` (the
whole road once)."""

from __future__ import annotations

from typing import Annotated

import typer

from kinject.cli.common import fail, load_settings, skip_final_collection
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError


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
        run_serve(load_settings(config, data_dir), host, port, workers,
                  on_ready=lambda url: typer.echo(f"kinject serving on {url}"))
    except KinjectError as exc:
        raise fail(exc) from exc
    skip_final_collection()  # stopped (SIGTERM/SIGINT): exit 0 now, not after a full GC


def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    workers: Annotated[int, typer.Option("--workers", "-n", min=1,
                                         help="Workers in this process.")] = 1,
) -> None:
    """Run ingest workers (consumer group kinject-ingest) and the corpus materialiser
    (group kinject-corpus-<store id>) until Ctrl-C or SIGTERM."""
    from kinject.app.processes import run_workers

    try:
        run_workers(load_settings(config, data_dir), workers, corpus=True)
    except KinjectError as exc:
        raise fail(exc) from exc
    skip_final_collection()


def broker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 9092,
) -> None:
    """Run the embedded Tansu broker in the foreground (Ctrl-C stops it)."""
    from kinject.app.processes import run_broker

    try:
        run_broker(load_settings(config, data_dir), port=port)
    except KinjectError as exc:
        raise fail(exc) from exc


def demo(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    keep: Annotated[bool, typer.Option(help="Keep the demo's state from the last run.")] = False,
) -> None:
    """Run the whole road once: broker, sample knowledge, worker, index, answers."""
    from kinject.demo import run_demo

    try:
        ok = run_demo(load_settings(config, data_dir), fresh=not keep)
    except KinjectError as exc:
        raise fail(exc) from exc
    if not ok:
        raise typer.Exit(code=1)
