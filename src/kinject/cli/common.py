"""What every command does around its work: load the settings, turn errors into exit codes,
and open the facade for the views that need no index."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.app import KinjectService
    from kinject.config import Settings


def load_settings(config: Path | None, data_dir: Path | None = None) -> Settings:
    """The settings of ``config`` (and ``--data-dir``), with logging set up, the compute
    threads set (``models.threads``) and the data dir made private when the settings ask."""
    from kinject.config import load_settings as load
    from kinject.logs import setup_logging

    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    settings = load(config, **overrides)
    setup_logging(settings.log_level)
    if settings.models.threads is not None:  # torch loads only for a command that sets it
        from kinject.threads import apply_threads

        apply_threads(settings.models.threads)
    if settings.private_files:
        from kinject.datadir import secure_data_dir

        secure_data_dir(settings.data_dir)
    return settings


def skip_final_collection() -> None:
    """For a long-running command that has shut down in order: freeze the heap so the
    interpreter's exit does not walk it. A server that loaded torch, transformers and the
    models holds millions of objects; the final garbage collections over them took ~7 s of a
    SIGTERM'd ``kinject serve`` (of Docker's 10 s grace) on a busy 2-core machine."""
    import gc

    gc.freeze()


def fail(exc: KinjectError) -> typer.Exit:
    """Print ``exc`` with its code on stderr; the exit (code 2) to raise."""
    typer.secho(f"error [{exc.code}]: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def usage_error(message: object) -> typer.Exit:
    """Print a bad option or argument on stderr; the exit (code 2) to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@contextmanager
def unopened_facade(settings: Settings) -> Iterator[KinjectService]:
    """The facade without its index opened (no model loads): for adapters, conflicts and
    dead letters. Closed (its stores with it) when the block ends."""
    from kinject.app import KinjectService

    svc = KinjectService(settings)
    try:
        yield svc
    finally:
        svc.close()
