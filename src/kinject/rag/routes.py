"""Which road a question takes: retrieval, the adapter's own knowledge, or both.

``rag``      retrieve, then answer from the passages (abstains when nothing is relevant).
``adapter``  closed book: the generator with the active adapter answers from its weights.
``both``     retrieve and answer freely from the passages with the adapter active; with no
             relevant passage, answer closed book instead of abstaining.
``auto``     ``rag`` when no adapter is active; otherwise ``both`` when the relevant
             passages come from sources the adapter was trained on (their knowledge is in
             its weights too), ``rag`` when they do not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kinject.protocols import Generator

ROUTES = ("rag", "adapter", "both", "auto")


@dataclass(frozen=True)
class AdapterState:
    """The adapter active on the generator now, the sources in its lineage and, where the
    active adapter can change (hot-swap), a generator bound to this version: an answer
    labelled with ``version`` is written by it even if another is promoted meanwhile."""

    version: str | None = None
    lineage: frozenset[str] = field(default_factory=frozenset)
    generator: Generator | None = field(default=None, compare=False, repr=False)


AdapterProvider = Callable[[], AdapterState]


def no_adapter() -> AdapterState:
    return AdapterState()


def check_route(route: str) -> str:
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    return route


def resolve_auto(adapter: AdapterState, relevant: bool, sources: Iterable[str]) -> str:
    """The route ``auto`` takes for a question whose relevant passages come from ``sources``."""
    if adapter.version is None:
        return "rag"
    wanted = set(sources)
    if relevant and wanted and wanted <= adapter.lineage:
        return "both"
    return "rag"
