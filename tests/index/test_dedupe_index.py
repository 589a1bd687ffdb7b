"""Duplicates across sources in the index: kept in the docstore, searched once, and back
when the chunk they duplicated goes."""

from __future__ import annotations

from pathlib import Path

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex, TextIndexConfig
from kinject.index.visibility import hidden_chunks, near_duplicate_of
from kinject.types import Chunk, content_hash

LIGHTHOUSE = (
    "The oldest lighthouse on the Lantern Isles is the Fennick light on Wisk Island, first "
    "lit in 1859 and kept by the Calloway family for three generations. Senna Calloway, "
    "the last keeper, wrote the logbooks that the Guild of Lamplighters still keeps in the "
    "Wick House on Tessel Point, beside the charts of every wreck on the western reefs."
)
# One word changed: a near duplicate (Jaccard of word 3-shingles about 0.9).
LIGHTHOUSE_EDITED = LIGHTHOUSE.replace("the western reefs", "the western shoals")
FERRY = ("Visitors reach the isles by the morning ferry from Brinmore, which takes about two "
         "hours in calm weather and stops at Saltridge harbour and the old salt works quay.")
TEA = "萨尔特里奇港每年九月举办为期三天的海盐茶节，渔民们把新茶装在陶罐里，沿着码头摆成一条长龙。"
TEA_EDITED = TEA.replace("，渔民们", "。渔民们")  # punctuation only: the same text


def _update(emb: HashEmbedder, source_id: str, *texts: str, op: str = "upsert",
            ts: float | None = None) -> SourceUpdate:
    chunks = tuple(Chunk(content_hash(source_id, t), f"{source_id}#0", source_id, t, ordinal=i,
                         lang="zh" if t == TEA or t == TEA_EDITED else "en")
                   for i, t in enumerate(texts))
    return SourceUpdate(op=op, source_id=source_id, chunks=chunks if op == "upsert" else (),
                        vectors=emb.encode([c.text for c in chunks]) if op == "upsert"
                        else emb.encode([]), embedder=emb.name, ts=ts)


def _delete(emb: HashEmbedder, source_id: str) -> SourceUpdate:
    return SourceUpdate(op="delete", source_id=source_id, embedder=emb.name)


def _found(index: TextIndex, query: str, k: int = 10) -> list[str]:
    """Sources of the hits, each once, best first."""
    return list(dict.fromkeys(h.source_id for h in index.search(query, k)))


def _stored(index: TextIndex) -> int:
    assert index.docstore is not None
    return index.docstore.count()


def test_a_near_copy_from_another_source_is_kept_but_searched_once(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, "guild.txt", LIGHTHOUSE, FERRY)])
        index.apply([_update(hash_embedder, "mirror.html", LIGHTHOUSE_EDITED)])
        assert _stored(index) == 3  # every chunk is kept
        assert len(index) == 2  # the copy is not searchable
        assert _found(index, "Fennick light Calloway keeper logbooks") == ["guild.txt"]
        assert index.docstore is not None
        copy = content_hash("mirror.html", LIGHTHOUSE_EDITED)
        assert near_duplicate_of(index.docstore, copy) == content_hash("guild.txt", LIGHTHOUSE)
        assert hidden_chunks(index.docstore, "mirror.html") == {
            copy: {"near_duplicate_of": content_hash("guild.txt", LIGHTHOUSE)}}
        assert hidden_chunks(index.docstore, "guild.txt") == {}
        # an unrelated text of the same source is searchable as ever
        assert "guild.txt" in _found(index, "morning ferry Brinmore")


def test_exact_copies_and_chinese_copies_are_caught_within_one_batch(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([
            _update(hash_embedder, "a", FERRY),
            _update(hash_embedder, "b", "  " + FERRY.upper().replace(" ", "  ")),
            _update(hash_embedder, "c", TEA),
            _update(hash_embedder, "d", TEA_EDITED),
        ])
        assert _stored(index) == 4 and len(index) == 2
        # every search sees the first of each pair only, whatever it asks
        assert _found(index, "morning ferry from Brinmore") == ["a", "c"]
        assert _found(index, "海盐茶节 陶罐") == ["c", "a"]


def test_texts_of_one_source_are_never_duplicates_of_each_other(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, "a", LIGHTHOUSE, LIGHTHOUSE_EDITED)])
        assert len(index) == 2
        # and a source that differs enough is not a duplicate either
        other = LIGHTHOUSE.split(", beside")[0] + ". It was rebuilt in stone in 1902."
        index.apply([_update(hash_embedder, "b", other)])
        assert len(index) == 3


def test_deleting_or_changing_the_canonical_source_shows_the_copy_again(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, "guild.txt", LIGHTHOUSE)])
        index.apply([_update(hash_embedder, "mirror.html", LIGHTHOUSE_EDITED),
                     _update(hash_embedder, "copy.md", LIGHTHOUSE)])
        assert _found(index, "Fennick light Calloway") == ["guild.txt"]
        index.apply([_delete(hash_embedder, "guild.txt")])
        # exactly one of the two copies takes its place (the first applied)
        assert _found(index, "Fennick light Calloway") == ["mirror.html"]
        assert index.docstore is not None
        assert near_duplicate_of(index.docstore, content_hash("mirror.html",
                                                              LIGHTHOUSE_EDITED)) is None
        assert near_duplicate_of(index.docstore, content_hash("copy.md", LIGHTHOUSE)) == (
            content_hash("mirror.html", LIGHTHOUSE_EDITED))
        # the source now canonical changes its text: the last copy shows
        index.apply([_update(hash_embedder, "mirror.html", FERRY)])
        assert sorted(_found(index, "Fennick light Calloway ferry")) == ["copy.md",
                                                                         "mirror.html"]
        assert len(index) == 2 and _stored(index) == 2


def test_duplicate_state_survives_a_restart(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, "guild.txt", LIGHTHOUSE)])
        index.apply([_update(hash_embedder, "mirror.html", LIGHTHOUSE_EDITED)])
    with TextIndex(tmp_path, hash_embedder) as index:
        assert len(index) == 1 and _stored(index) == 2
        assert _found(index, "Fennick light Calloway") == ["guild.txt"]
        # the signatures came back: a new near copy is caught without re-reading any text
        index.apply([_update(hash_embedder, "third.txt", LIGHTHOUSE.replace("reefs", "rocks"))])
        assert _found(index, "Fennick light Calloway") == ["guild.txt"]
        # a replay of the copy's update changes nothing
        index.apply([_update(hash_embedder, "mirror.html", LIGHTHOUSE_EDITED)])
        assert len(index) == 1
        index.apply([_delete(hash_embedder, "guild.txt")])
        assert _found(index, "Fennick light Calloway") == ["mirror.html"]
    with TextIndex(tmp_path, hash_embedder) as index:
        assert _found(index, "Fennick light Calloway") == ["mirror.html"]
        assert len(index) == 1


def test_an_index_built_without_duplicate_detection_is_examined_when_it_is_turned_on(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    off = TextIndexConfig(near_duplicate_threshold=None)
    with TextIndex(tmp_path, hash_embedder, config=off) as index:
        index.apply([_update(hash_embedder, "guild.txt", LIGHTHOUSE)])
        index.apply([_update(hash_embedder, "mirror.html", LIGHTHOUSE_EDITED)])
        assert len(index) == 2
    with TextIndex(tmp_path, hash_embedder) as index:  # the default: on, at 0.9
        assert len(index) == 1
        assert _found(index, "Fennick light Calloway") == ["guild.txt"]
