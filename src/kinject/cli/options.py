"""The options several commands share, as ``Annotated`` aliases: one definition each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="KINJECT_CONFIG", help="TOML settings file."),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Directory for all durable state.")
]
FiltersOpt = Annotated[list[str] | None, typer.Option(
    "--filter", "-f", metavar="KEY=VALUE",
    help="Repeatable: kind=csv, lang=zh, source=kb/ (id prefix), since=2024-01-01, "
         "until=..., tag=x.")]
SyncOpt = Annotated[bool, typer.Option(
    "--sync/--no-sync",
    help="Catch up from kinject.chunks first when a broker is configured.")]
PassagesOpt = Annotated[int | None, typer.Option("--k", "-k", min=1, max=1000,
                                                 help="Passages to retrieve (default: rag.k).")]
