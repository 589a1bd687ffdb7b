"""``kinject keys``: create, list and revoke API keys (stored hashed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli.common import load_settings, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.cli.render import when

if TYPE_CHECKING:
    from kinject.api.auth import KeyStore

keys_app = typer.Typer(help="API keys for writes and admin calls (stored hashed).",
                       no_args_is_help=True)


def _key_store(config: Path | None, data_dir: Path | None) -> KeyStore:
    from kinject.api.auth import KEYS_FILE, KeyStore

    settings = load_settings(config, data_dir)
    return KeyStore(settings.api.keys_file or settings.data_dir / KEYS_FILE)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    role: Annotated[str, typer.Option("--role", help="read, write or admin.")] = "read",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from kinject.api.auth import ROLES

    if role not in ROLES:
        raise usage_error(f"--role must be one of {', '.join(ROLES)}")
    try:
        entry, key = _key_store(config, data_dir).create(name, role)
    except ValueError as exc:
        raise usage_error(exc) from exc
    typer.echo(key)
    typer.secho(f"key {entry.id} ({entry.name}, {entry.role}) created; it is shown only now",
                err=True)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List keys (id, name, role, created, revoked); secrets are never shown."""
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
