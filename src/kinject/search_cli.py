"""What ``kinject search`` does: open the local replica, catch up from the broker when one is
configured, search, and print the hits (a rich table, or JSON lines)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

from kinject.config import Settings
from kinject.errors import BrokerError
from kinject.types import Hit

log = logging.getLogger(__name__)

MODES = ("hybrid", "vector", "bm25")
SNIPPET_CHARS = 160


def run_search(settings: Settings, query: str, k: int, filters: Sequence[str],
               mode: str | None, sync: bool = True) -> list[Hit]:
    """Hits for ``query``. Raises ValueError for a bad filter, mode or empty query (before
    any model loads) and KinjectError for what the index or broker cannot do."""
    from kinject.index.filters import SearchFilters

    parsed = SearchFilters.parse(filters)
    if mode is not None and mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not query.strip():
        raise ValueError("the query is empty")
    from kinject.service import KinjectService

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


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def hit_dict(rank: int, hit: Hit) -> dict[str, Any]:
    meta = dict(hit.meta)
    return {
        "rank": rank,
        "score": round(hit.score, 6),
        "source_id": hit.source_id,
        "chunk_id": hit.chunk_id,
        "snippet": snippet(hit.text),
        "text": hit.text,
        "kind": meta.pop("kind", None),
        "lang": meta.pop("lang", None),
        "meta": meta,
    }


def print_hits(hits: Sequence[Hit], *, as_json: bool = False) -> None:
    if as_json:
        for rank, hit in enumerate(hits, 1):
            sys.stdout.write(json.dumps(hit_dict(rank, hit), ensure_ascii=False,
                                        default=str) + "\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not hits:
        console.print("no hits")
        return
    table = Table(title=f"{len(hits)} hit(s)")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source id", overflow="fold")
    table.add_column("chunk id", overflow="fold")
    table.add_column("snippet", overflow="fold", ratio=3)
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.source_id, hit.chunk_id[:12],
                      snippet(hit.text))
    console.print(table)
