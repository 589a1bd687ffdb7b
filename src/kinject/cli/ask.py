"""``kinject ask``: open the local replica, catch up from the broker when one is configured,
answer, and print the answer with its numbered sources (rich on a terminal, plain text
otherwise, or JSON)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli import render
from kinject.cli.common import fail, load_settings, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt, FiltersOpt, PassagesOpt, SyncOpt
from kinject.errors import BrokerError, KinjectError

if TYPE_CHECKING:
    from kinject.config import Settings
    from kinject.types import Answer

log = logging.getLogger(__name__)


def run_ask(settings: Settings, question: str, k: int | None, filters: Sequence[str],
            route: str, sync: bool = True) -> Answer:
    """The Answer to ``question``. Raises ValueError for a bad filter, route or an empty
    question (before any model loads) and KinjectError for what the index or broker cannot do.
    """
    from kinject.app.values import SearchFilters, check_route

    parsed = SearchFilters.parse(filters)
    check_route(route)
    if not question.strip():
        raise ValueError("the question is empty")
    from kinject.app import KinjectService

    with KinjectService(settings) as svc:
        if sync and settings.kafka.bootstrap_servers:
            try:
                svc.sync()
            except BrokerError as exc:
                log.warning("could not catch up from %s (%s); answering from the local replica",
                            settings.kafka.bootstrap_servers, exc)
        return svc.ask(question, k, parsed, route)


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
) -> None:
    """Answer a question from the knowledge base, with its numbered sources."""
    try:
        answer = run_ask(load_settings(config, data_dir), question, k, filters or [], route,
                         sync)
    except ValueError as exc:
        raise usage_error(exc) from exc
    except KinjectError as exc:
        raise fail(exc) from exc
    render.print_answer(answer, as_json=as_json)
