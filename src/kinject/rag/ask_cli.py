"""What ``kinject ask`` does: open the local replica, catch up from the broker when one is
configured, answer, and print the answer with its numbered sources (rich on a terminal,
plain text otherwise, or JSON)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from kinject.config import Settings
from kinject.errors import BrokerError
from kinject.rag.routes import check_route
from kinject.types import Answer

log = logging.getLogger(__name__)


def run_ask(settings: Settings, question: str, k: int | None, filters: Sequence[str],
            route: str, sync: bool = True) -> Answer:
    """The Answer to ``question``. Raises ValueError for a bad filter, route or an empty
    question (before any model loads) and KinjectError for what the index or broker cannot do.
    """
    from kinject.index.filters import SearchFilters

    parsed = SearchFilters.parse(filters)
    check_route(route)
    if not question.strip():
        raise ValueError("the question is empty")
    from kinject.service import KinjectService

    with KinjectService(settings) as svc:
        if sync and settings.kafka.bootstrap_servers:
            try:
                svc.sync()
            except BrokerError as exc:
                log.warning("could not catch up from %s (%s); answering from the local replica",
                            settings.kafka.bootstrap_servers, exc)
        return svc.ask(question, k, parsed, route)


def answer_dict(answer: Answer) -> dict[str, Any]:
    return dataclasses.asdict(answer)


def print_answer(answer: Answer, *, as_json: bool = False, rich: bool | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(answer_dict(answer), ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
        return
    if rich is None:
        rich = sys.stdout.isatty()
    version = answer.adapter_version[:12] if answer.adapter_version else "base model"
    footer = f"route {answer.route}, {version}, {answer.timings.get('total_s', 0.0):.2f}s"
    if not rich:
        lines = [answer.text, ""]
        lines += [f"[{c.n}] {c.label} (score {c.score:.3f}): {c.snippet}"
                  for c in answer.citations]
        if not answer.citations:
            lines.append("no sources" if not answer.abstained else "no relevant source found")
        lines.append(footer)
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    style = "yellow" if answer.abstained else "green"
    console.print(Panel(answer.text, title="answer", border_style=style, subtitle=footer))
    if answer.citations:
        table = Table(show_header=True, header_style="bold")
        table.add_column("n", justify="right")
        table.add_column("source", overflow="fold")
        table.add_column("score", justify="right")
        table.add_column("snippet", overflow="fold")
        for c in answer.citations:
            table.add_row(f"[{c.n}]", c.label, f"{c.score:.3f}", c.snippet)
        console.print(table)
