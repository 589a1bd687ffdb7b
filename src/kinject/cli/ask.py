"""``kinject ask``: open the local replica, catch up from the broker when one is configured,
answer, and print the answer with its numbered sources (rich on a terminal, plain text
otherwise, or JSON); with ``--url``, ask a running server instead (no model loads here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli import remote, render
from kinject.cli.common import fail, load_settings, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt, FiltersOpt, PassagesOpt, SyncOpt
from kinject.errors import BrokerError, KinjectError
from kinject.logs import setup_logging

if TYPE_CHECKING:
    from kinject.app.values import SearchFilters
    from kinject.config import Settings
    from kinject.types import Answer

log = logging.getLogger(__name__)


def run_ask(settings: Settings, question: str, k: int | None, filters: Sequence[str],
            route: str, sync: bool = True) -> Answer:
    """The Answer to ``question``. Raises ValueError for a bad filter, route or an empty
    question (before any model loads) and KinjectError for what the index or broker cannot do.
    """
    parsed = _checked(question, filters, route)
    from kinject.app import KinjectService

    with KinjectService(settings) as svc:
        if sync and settings.kafka.bootstrap_servers:
            try:
                svc.sync()
            except BrokerError as exc:
                log.warning("could not catch up from %s (%s); answering from the local replica",
                            settings.kafka.bootstrap_servers, exc)
        return svc.ask(question, k, parsed, route)


def _checked(question: str, filters: Sequence[str], route: str) -> SearchFilters:
    from kinject.app.values import SearchFilters, check_route

    parsed = SearchFilters.parse(filters)
    check_route(route)
    if not question.strip():
        raise ValueError("the question is empty")
    return parsed


def run_remote_ask(url: str, api_key: str | None, question: str, k: int | None,
                   filters: Sequence[str], route: str) -> Answer:
    """The Answer of the server at ``url`` (``POST /v1/ask``); ValueError as run_ask, and
    remote.ServerError when the server cannot be reached or refuses."""
    _checked(question, filters, route)
    with remote.server_client(url, api_key) as client:
        return remote.ask(client, question, k, filters, route)


def ask(
    question: Annotated[str, typer.Argument(help="The question (any language).")],
    k: PassagesOpt = None,
    filters: FiltersOpt = None,
    route: Annotated[str, typer.Option(
        help="rag (retrieval), adapter (closed book), both, or auto.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="The Answer as one JSON object.")
                       ] = False,
    sync: SyncOpt = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    url: remote.UrlOpt = None,
    api_key: remote.ApiKeyOpt = None,
) -> None:
    """Answer a question from the knowledge base, with its numbered sources."""
    try:
        if url is not None:
            setup_logging()
            answer = run_remote_ask(url, api_key, question, k, filters or [], route)
        else:
            answer = run_ask(load_settings(config, data_dir), question, k, filters or [],
                             route, sync)
    except ValueError as exc:
        raise usage_error(exc) from exc
    except KinjectError as exc:
        raise fail(exc) from exc
    render.print_answer(answer, as_json=as_json)
