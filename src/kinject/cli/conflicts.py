"""``kinject conflicts``: contradictions between structured sources."""

from __future__ import annotations

from typing import Annotated

import typer

from kinject.cli import render
from kinject.cli.common import fail, load_settings, unopened_facade
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError


def conflicts(
    entity: Annotated[str | None, typer.Option("--entity", help="Only this entity.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List contradictions between structured sources: the same entity and field with
    different values, each with its source and record time. The newest value is the one
    search returns; the others stay stored."""
    try:
        settings = load_settings(config, data_dir)
    except KinjectError as exc:
        raise fail(exc) from exc
    with unopened_facade(settings) as svc:
        found = svc.stored_conflicts(entity)
    if as_json:
        render.json_lines(found)
    else:
        render.conflicts(found)
