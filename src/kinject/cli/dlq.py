"""``kinject dlq``: list, show and replay dead letters, through the facade."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.app.publishing import with_serve_broker
from kinject.cli import render
from kinject.cli.common import fail, load_settings, unopened_facade, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.app.values import DeadLetter

# How long list and show wait for the configured broker before showing what is stored here.
MIRROR_TIMEOUT_S = 10.0

dlq_app = typer.Typer(help="Inspect and replay dead letters (kinject.dlq).",
                      no_args_is_help=True)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N.")] = 50,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the latest dead letters: id, time, stage, reason, source, times seen.

    They are read from kinject's durable store (what the topic alone holds is copied in
    first), so they outlive a restart of the embedded broker."""
    try:
        letters = _dead_letters(config, data_dir)
    except KinjectError as exc:
        raise fail(exc) from exc
    render.dead_letters(letters, limit)


@dlq_app.command("show")
def dlq_show(
    offset: Annotated[str, typer.Argument(help="The letter's id (see `kinject dlq list`).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show one dead letter in full, with the original payload decoded when it is text."""
    from kinject.app.values import find_dead_letter

    try:
        letter = find_dead_letter(_dead_letters(config, data_dir), offset)
    except KinjectError as exc:
        raise fail(exc) from exc
    render.dead_letter(letter)


@dlq_app.command("replay")
def dlq_replay(
    offset: Annotated[
        # --offset: its first name (a letter's id was its offset in kinject.dlq), kept working
        str | None, typer.Option("--id", "--offset",
                                 help="The letter's id (see `kinject dlq list`).")
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
    if (offset is None) == (not all_):
        raise usage_error("give exactly one of --id ID and --all")
    try:
        # beside a running `kinject serve`, its embedded broker (stream/serve_broker.py)
        settings = with_serve_broker(load_settings(config, data_dir))
        with unopened_facade(settings) as svc:
            sent, topic = svc.replay_dead_letters(offset, include_replayed=include_replayed)
    except KinjectError as exc:
        raise fail(exc) from exc
    typer.echo(f"replayed {len(sent)} dead letter(s) to {topic}")


def _dead_letters(config: Path | None, data_dir: Path | None) -> list[DeadLetter]:
    """Every stored dead letter, after copying in what only the broker's topic holds (when
    a broker is configured and answers)."""
    settings = with_serve_broker(load_settings(config, data_dir))
    with unopened_facade(settings) as svc:
        if settings.kafka.bootstrap_servers:
            try:
                svc.mirror_dead_letters(timeout_s=MIRROR_TIMEOUT_S)
            except KinjectError as exc:
                typer.secho(f"warning: {exc}; showing the letters stored here", fg="yellow",
                            err=True)
        return svc.dead_letter_store().latest()
