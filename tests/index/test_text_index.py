from pathlib import Path

import numpy as np
import pytest

from kinject.errors import IndexFailure
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.types import Chunk, content_hash


def _update(
    emb: HashEmbedder,
    source_id: str,
    texts: list[str],
    pos: tuple[str, int, int] = ("kinject.records", 0, 0),
) -> SourceUpdate:
    chunks = tuple(
        Chunk(
            chunk_id=content_hash(source_id, t),
            doc_id=f"{source_id}#0",
            source_id=source_id,
            text=t,
            ordinal=i,
        )
        for i, t in enumerate(texts)
    )
    return SourceUpdate(
        op="upsert",
        source_id=source_id,
        chunks=chunks,
        vectors=emb.encode(texts),
        record_position=pos,
        embedder=emb.name,
    )


def test_search_finds_the_matching_chunk(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply(
            [
                _update(hash_embedder, "a", ["the red falcon nests on cliffs"]),
                _update(hash_embedder, "b", ["quarterly tax filing deadlines"]),
            ]
        )
        hits = index.search("where does the red falcon nest", k=2)
        assert hits[0].source_id == "a"
        assert hits[0].score > hits[1].score


def test_replay_changes_nothing_and_update_replaces(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        u = _update(hash_embedder, "a", ["alpha one", "alpha two"])
        index.apply([u])
        index.apply([u])  # at-least-once delivery: the same update again
        assert len(index) == 2
        index.apply([_update(hash_embedder, "a", ["alpha three"])])  # the source changed
        assert len(index) == 1
        assert [h.text for h in index.search("alpha", k=5)] == ["alpha three"]


def test_an_update_of_only_the_metadata_is_applied(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    import dataclasses

    with TextIndex(tmp_path, hash_embedder) as index:
        u = _update(hash_embedder, "a", ["alpha one"])
        index.apply([dataclasses.replace(
            u, chunks=(dataclasses.replace(u.chunks[0], meta={"v": 1}),))])
        index.apply([dataclasses.replace(
            u, chunks=(dataclasses.replace(u.chunks[0], meta={"v": 2}),))])
        assert len(index) == 1
        assert index.search("alpha", k=1)[0].meta["v"] == 2
        assert [c.meta for c in index.chunks_of(["a"])] == [{"v": 2}]


def test_delete_removes_the_source_and_is_recorded(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply(
            [
                _update(hash_embedder, "a", ["secret plan"]),
                _update(hash_embedder, "b", ["public plan"]),
            ]
        )
        index.apply([SourceUpdate(op="delete", source_id="a")])
        assert {h.source_id for h in index.search("plan", k=5)} == {"b"}
        ops = [e["op"] for e in index.docstore.lineage("a")]  # type: ignore[union-attr]
        assert ops == ["upsert", "delete"]


def test_state_and_offsets_survive_restart(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply(
            [_update(hash_embedder, "a", ["kept across restarts"])],
            {("kinject.chunks", 0): 5, ("kinject.chunks", 2): 9},
        )
    with TextIndex(tmp_path, hash_embedder) as index:
        assert index.search("kept across restarts", 1)[0].source_id == "a"
        assert index.applied_offsets("kinject.chunks") == {0: 5, 2: 9}


def test_stale_or_broken_snapshot_is_rebuilt_from_the_docstore(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    index = TextIndex(tmp_path, hash_embedder).open()
    index.apply([_update(hash_embedder, "a", ["first"])])
    index.snapshot()
    # a crash after the docstore commit, before the next snapshot
    index.apply([_update(hash_embedder, "b", ["second"])])
    index.docstore.close()  # type: ignore[union-attr]
    with TextIndex(tmp_path, hash_embedder) as reopened:
        assert len(reopened) == 2
    (tmp_path / "text.faiss").write_bytes(b"garbage")
    with TextIndex(tmp_path, hash_embedder) as reopened:
        assert {h.source_id for h in reopened.search("second first", 5)} == {"a", "b"}


def test_embedder_mismatch_is_a_clear_error(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, "a", ["x y z"])])
    other = HashEmbedder(dim=32)
    with pytest.raises(IndexFailure, match="64-d"):
        TextIndex(tmp_path, other).open()


def test_bad_arguments(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with pytest.raises(ValueError, match="chunks but"):
        SourceUpdate(
            op="upsert",
            source_id="a",
            chunks=(Chunk(chunk_id="c", doc_id="d", source_id="a", text="t"),),
            vectors=np.zeros((0, 64), np.float32),
        )
    with TextIndex(tmp_path, hash_embedder) as index:
        with pytest.raises(ValueError, match="k must be positive"):
            index.search("q", k=0)
        assert index.search("anything", 3) == []


class _Counting(HashEmbedder):
    calls = 0

    def encode(self, texts, *, batch_size=32):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return super().encode(texts, batch_size=batch_size)


def test_search_many_embeds_all_queries_at_once_and_finds_what_search_finds(
        tmp_path: Path) -> None:
    emb = _Counting()
    with TextIndex(tmp_path, emb) as index:
        index.apply([_update(emb, "a", ["the red falcon nests on cliffs"]),
                     _update(emb, "b", ["quarterly tax filing deadlines"]),
                     _update(emb, "c", ["ferries to Vask leave at noon"])])
        queries = ["where does the red falcon nest", "when are taxes due", "ferry times"]
        one_by_one = [index.search(q, k=2) for q in queries]
        _Counting.calls = 0
        together = index.search_many(queries, k=2)
        assert _Counting.calls == 1  # one encode call for the three queries
        assert [[h.chunk_id for h in hits] for hits in together] == [
            [h.chunk_id for h in hits] for hits in one_by_one]
        assert [hits[0].source_id for hits in together] == ["a", "b", "c"]
