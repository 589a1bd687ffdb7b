"""What runs until stopped besides the server: ingest workers with the corpus materialiser
(``kinject worker``) and the embedded Tansu broker in the foreground (``kinject broker``)."""

from __future__ import annotations

from kinject.config import Settings


def run_workers(settings: Settings, count: int = 1, *, corpus: bool = True) -> None:
    """Run ``count`` ingest workers (and the corpus materialiser with ``corpus``) until
    SIGINT or SIGTERM (see stream.runner.run_ingest_workers)."""
    from kinject.stream.runner import run_ingest_workers
    from kinject.threads import apply_threads

    apply_threads(settings.models.threads)
    run_ingest_workers(settings, count, corpus=corpus)


def run_broker(settings: Settings, port: int = 9092) -> None:
    """Run the embedded broker on 127.0.0.1:``port`` until SIGINT, SIGTERM or SIGHUP; its
    log goes to the data dir."""
    from kinject.stream.broker import serve_foreground

    serve_foreground(settings.kafka, port=port,
                     log_file=settings.data_dir / "logs" / "tansu.log")
