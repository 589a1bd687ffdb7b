"""The unit of change the index applies: a source's full set of chunks, or its deletion."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kinject.types import Chunk


@dataclass(frozen=True)
class ExtraVectors:
    """Vectors of some of an update's chunks in a second space (``zh``: the multilingual
    embedder, for Chinese and mixed chunks): ``positions`` index into the update's chunks."""

    space: str
    embedder: str
    positions: tuple[int, ...]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.vectors):
            raise ValueError(f"{len(self.positions)} positions but {len(self.vectors)} vectors "
                             f"in space {self.space!r}")


@dataclass(frozen=True)
class SourceUpdate:
    """Replace everything the index holds for ``source_id`` with ``chunks`` (op=upsert),
    or remove it all (op=delete). Applying the same update twice changes nothing."""

    op: str
    source_id: str
    chunks: tuple[Chunk, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    content_hash: str | None = None
    # Where the original record sat on kinject.records: lineage back to Kafka.
    record_position: tuple[str, int, int] | None = None
    embedder: str = ""
    # Vectors in other spaces (the Chinese route); replicas embed what is missing themselves.
    extra: tuple[ExtraVectors, ...] = ()
    # The record's timestamp (envelope ``ts``): the newer of two conflicting rows wins.
    ts: float | None = None

    def __post_init__(self) -> None:
        if self.op not in ("upsert", "delete"):
            raise ValueError(f"op must be 'upsert' or 'delete', got {self.op!r}")
        if self.op == "upsert" and len(self.chunks) != len(self.vectors):
            raise ValueError(
                f"{len(self.chunks)} chunks but {len(self.vectors)} vectors for {self.source_id}"
            )
