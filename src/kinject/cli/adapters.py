"""``kinject adapters``: list, show, activate and roll back adapter versions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kinject.cli import render
from kinject.cli.common import fail, load_settings, unopened_facade
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError

adapters_app = typer.Typer(help="Adapter versions: list, show, activate, roll back.",
                           no_args_is_help=True)


@adapters_app.command("list")
def adapters_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Every adapter version, oldest first; * marks the one serving."""
    with unopened_facade(load_settings(config, data_dir)) as svc:
        active, versions = svc.adapter_listing()
    render.adapters(active, versions)


@adapters_app.command("show")
def adapters_show(
    version: Annotated[str, typer.Argument(help="A version or a unique prefix (6+ chars).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One version's manifest: lineage, training config, metrics, gate report."""
    try:
        with unopened_facade(load_settings(config, data_dir)) as svc:
            out = svc.adapter_manifest(version)
    except KinjectError as exc:
        raise fail(exc) from exc
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=str))


@adapters_app.command("activate")
def adapters_activate(
    version: Annotated[str, typer.Argument(help="A version, a unique prefix, or 'base'.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve VERSION (or the base model) now; replicas follow. Tainted versions are refused."""
    from kinject.app import KinjectService

    try:
        svc = KinjectService(load_settings(config, data_dir))
        change = svc.activate(None if version == "base" else version)
    except KinjectError as exc:
        raise fail(exc) from exc
    render.adapter_change("serving", change)


@adapters_app.command("rollback")
def adapters_rollback(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Go back to the adapter that served before the current one (the base model at most)."""
    from kinject.app import KinjectService

    try:
        change = KinjectService(load_settings(config, data_dir)).rollback()
    except KinjectError as exc:
        raise fail(exc) from exc
    render.adapter_change("rolled back to", change)
