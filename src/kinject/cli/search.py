"""``kinject search``: open the local replica, catch up from the broker when one is
configured, search, and print the hits (a rich table, or JSON lines); with ``--url``, search
a running server instead (no model loads here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli import remote, render
from kinject.cli.common import fail, load_settings, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt, FiltersOpt, SyncOpt
from kinject.errors import BrokerError, KinjectError
from kinject.logs import setup_logging

if TYPE_CHECKING:
    from kinject.app.values import SearchFilters
    from kinject.config import Settings
    from kinject.types import Hit

log = logging.getLogger(__name__)

MODES = ("hybrid", "vector", "bm25")


def run_search(settings: Settings, query: str, k: int, filters: Sequence[str],
               mode: str | None, sync: bool = True) -> list[Hit]:
    """Hits for ``query``. Raises ValueError for a bad filter, mode or empty query (before
    any model loads) and KinjectError for what the index or broker cannot do."""
    parsed = _checked(query, filters, mode)
    from kinject.app import KinjectService

    with KinjectService(settings) as svc:
        if sync and settings.kafka.bootstrap_servers:
            try:
                svc.sync()
            except BrokerError as exc:
                log.warning("could not catch up from %s (%s); searching the local replica",
                            settings.kafka.bootstrap_servers, exc)
        if len(svc.index) == 0:
            log.warning("the local index in %s is empty; set KINJECT_KAFKA__BOOTSTRAP_SERVERS "
                        "to the broker your workers publish to", settings.data_dir / "index")
        return svc.search(query, k, parsed, mode)


def _checked(query: str, filters: Sequence[str], mode: str | None) -> SearchFilters:
    from kinject.app.values import SearchFilters

    parsed = SearchFilters.parse(filters)
    if mode is not None and mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not query.strip():
        raise ValueError("the query is empty")
    return parsed


def run_remote_search(url: str, api_key: str | None, query: str, k: int,
                      filters: Sequence[str], mode: str | None) -> list[Hit]:
    """The hits of the server at ``url`` (``GET /v1/search``); ValueError as run_search,
    and remote.ServerError when the server cannot be reached or refuses."""
    _checked(query, filters, mode)
    with remote.server_client(url, api_key) as client:
        return remote.search(client, query, k, filters, mode)


def search(
    query: Annotated[str, typer.Argument(help="What to look for (any language).")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Hits to show.")] = 5,
    filters: FiltersOpt = None,
    mode: Annotated[str | None, typer.Option(
        help="hybrid (vector + BM25), vector or bm25; default: the index.search_mode "
             "setting.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per hit.")] = False,
    sync: SyncOpt = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    url: remote.UrlOpt = None,
    api_key: remote.ApiKeyOpt = None,
) -> None:
    """Search the knowledge base: ranked chunks with scores, sources and snippets."""
    try:
        if url is not None:
            setup_logging()
            hits = run_remote_search(url, api_key, query, k, filters or [], mode)
        else:
            hits = run_search(load_settings(config, data_dir), query, k, filters or [], mode,
                              sync)
    except ValueError as exc:
        raise usage_error(exc) from exc
    except KinjectError as exc:
        raise fail(exc) from exc
    render.print_hits(hits, as_json=as_json)
