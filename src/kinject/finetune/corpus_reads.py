"""What is read from the corpus store: examples and chunks by cycle and source, evaluation
questions, counts, and the manifest of an example set. :class:`CorpusReads` is the read side
of :class:`~kinject.finetune.corpus.CorpusStore`, which opens the file and writes it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kinject import sqlite
from kinject.finetune.augment import AugmentConfig, QAPair, eval_questions, train_questions
from kinject.finetune.corpus_schema import (
    _CHUNK_COLUMNS,
    _EXAMPLE_COLUMNS,
    _row_to_chunk,
    _row_to_example,
)
from kinject.types import Chunk, TrainingExample, content_hash


class CorpusReads(sqlite.Store):
    """Reads of the corpus file (``_db``) under its lock; ``augment`` phrases the questions."""

    augment: AugmentConfig

    def _get(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else default

    def examples(self, cycles: Iterable[int] | None = None, exclude_sources: Iterable[str] = (),
                 forms: Iterable[str] | None = None) -> list[TrainingExample]:
        """Examples (in arrival order) of the given cycles (all when None), without the
        excluded sources and, when ``forms`` is given, of those forms only."""
        where, args = self._filter(cycles, exclude_sources)
        if forms is not None:
            fs = list(forms)
            where.append(f"form IN ({','.join('?' * len(fs))})")
            args.extend(fs)
        sql = f"SELECT {_EXAMPLE_COLUMNS} FROM examples"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [_row_to_example(r) for r in rows]

    def examples_by_id(self, ids: Sequence[str]) -> list[TrainingExample]:
        out: list[TrainingExample] = []
        with self._lock:
            for start in range(0, len(ids), 500):
                part = list(ids[start:start + 500])
                rows = self._db.execute(
                    f"SELECT {_EXAMPLE_COLUMNS} FROM examples WHERE example_id IN "
                    f"({','.join('?' * len(part))})", part).fetchall()
                out.extend(_row_to_example(r) for r in rows)
        order = {i: n for n, i in enumerate(ids)}
        return sorted(out, key=lambda e: order[e.example_id])

    def chunks(self, cycles: Iterable[int] | None = None, exclude_sources: Iterable[str] = ()
               ) -> list[tuple[Chunk, int]]:
        """Stored chunks with the cycle each first appeared in."""
        where, args = self._filter(cycles, exclude_sources)
        sql = f"SELECT {_CHUNK_COLUMNS} FROM chunks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY cycle, source_id, ordinal", args).fetchall()
        return [_row_to_chunk(r) for r in rows]

    def qa_pairs(self, cycles: Iterable[int] | None = None, exclude_sources: Iterable[str] = (),
                 *, held_out: bool = True) -> list[QAPair]:
        """Questions for evaluation with their answers. ``held_out=True`` (the default) gives
        phrasings no training example uses; False the first training phrasing."""
        make = eval_questions if held_out else train_questions
        return [q for chunk, cycle in self.chunks(cycles, exclude_sources)
                for q in make(chunk, cycle=cycle, config=self.augment)]

    def new_since(self, cycle: int) -> int:
        """How many examples first appeared after ``cycle``."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM examples WHERE cycle > ?",
                                        (cycle,)).fetchone()[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM examples").fetchone()[0])

    def summary(self) -> dict[str, int]:
        """Its size for status pages: examples, sources, the cycle arriving examples join,
        and how many of them wait for the next fine-tuning cycle (``pending``)."""
        with self._lock:
            cycle = int(self._get("cycle", "1"))
            examples, sources, pending = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT source_id), COALESCE(SUM(cycle >= ?), 0) "
                "FROM examples", (cycle,)).fetchone()
        return {"examples": int(examples), "sources": int(sources), "cycle": cycle,
                "pending": int(pending)}

    def sources(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT source_id FROM examples")}

    @staticmethod
    def manifest(examples: Iterable[TrainingExample]) -> str:
        """A content hash of an example set (order-free): equal sets, equal manifests."""
        digests = sorted(content_hash(e.example_id, e.prompt, e.completion, e.form)
                         for e in examples)
        return content_hash(*digests) if digests else content_hash("empty corpus")

    @staticmethod
    def sources_of(examples: Iterable[TrainingExample]) -> set[str]:
        return {e.source_id for e in examples}

    @staticmethod
    def _filter(cycles: Iterable[int] | None, exclude_sources: Iterable[str]
                ) -> tuple[list[str], list[object]]:
        where: list[str] = []
        args: list[object] = []
        if cycles is not None:
            cs = [int(c) for c in cycles]
            where.append(f"cycle IN ({','.join('?' * len(cs))})" if cs else "0")
            args.extend(cs)
        ex = list(exclude_sources)
        if ex:
            where.append(f"source_id NOT IN ({','.join('?' * len(ex))})")
            args.extend(ex)
        return where, args
