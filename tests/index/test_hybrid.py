"""Hybrid search: BM25 beside the vectors, fused by rank; deletes, restarts, HNSW, Chinese."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kinject.index.ann_index import AnnConfig
from kinject.index.bm25_index import Bm25Index
from kinject.index.bm25_tokens import tokenize
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import Embedder, HashEmbedder
from kinject.index.text_index import TextIndex, TextIndexConfig
from kinject.ingest.normalise import detect_lang
from kinject.stream.events import decode_update, encode_update
from kinject.types import Chunk, content_hash


def _update(emb: Embedder, source_id: str, texts: list[str], **kw: Any) -> SourceUpdate:
    chunks = tuple(
        Chunk(chunk_id=content_hash(source_id, t), doc_id=source_id, source_id=source_id,
              text=t, ordinal=i, lang=detect_lang(t), kind=kw.pop("kind", "text"))
        for i, t in enumerate(texts))
    return SourceUpdate(op="upsert", source_id=source_id, chunks=chunks,
                        vectors=emb.encode(texts), embedder=emb.name, **kw)


def _codes(n: int) -> list[str]:
    rng = random.Random(7)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return [f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randint(1000, 9999)}"
            for _ in range(n)]


def test_tokenizer_keeps_codes_and_cuts_chinese() -> None:
    toks = tokenize("The XK-4471 blenders were shipped")
    assert "xk-4471" in toks and "4471" in toks and "blender" in toks and "the" not in toks
    zh = tokenize("王小明于1950年出生在大理")
    assert "大理" in zh and "出生" in zh and "1950" in zh


def test_a_question_in_one_chinese_script_finds_a_page_in_the_other(
        tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    # the same words in Traditional and Simplified characters share no character here, so
    # without folding BM25 has nothing to match (and a hash embedder nothing to go on)
    pages = {
        "tw/library": "臺北市立圖書館的開放時間是每天早上九點到晚上九點。",
        "cn/meeting": "我们公司的会议室在三楼，预订请找前台。",
        "cn/museum": "高雄的博物馆周一休息，门票五十元。",
    }
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, sid, [text]) for sid, text in pages.items()])
        assert index.search("台北图书馆几点开放？", 1, mode="bm25")[0].source_id == "tw/library"
        assert index.search("會議室在幾樓？", 1, mode="bm25")[0].source_id == "cn/meeting"
        # the page keeps its own characters: folding is for matching only
        assert index.search("台北图书馆", 1)[0].text == pages["tw/library"]


def test_hybrid_finds_a_product_code_that_vectors_miss(tmp_path: Path, minilm: Embedder) -> None:
    items = ["kettle", "blender", "toaster", "heater", "desk fan", "lamp"]
    codes = _codes(40)
    texts = [f"The {items[i % len(items)]} with part number {c} ships with a two-year "
             "warranty and a spare fuse." for i, c in enumerate(codes)]
    with TextIndex(tmp_path, minilm) as index:
        index.apply([_update(minilm, f"p{i}", [t]) for i, t in enumerate(texts)])

        def found(mode: str, k: int) -> float:
            return float(np.mean([
                f"p{i}" in [h.source_id for h in index.search(f"warranty for part {c}", k,
                                                              mode=mode)]
                for i, c in enumerate(codes)]))

        vector = found("vector", 1)
        assert vector < 1.0  # MiniLM mixes up some of the codes
        assert found("bm25", 1) == 1.0
        assert found("hybrid", 1) > vector
        assert found("hybrid", 3) == 1.0
        hits = index.search("which kettle comes with a spare fuse", 3)
        assert "kettle" in hits[0].text
        assert hits[0].meta["fused"] > 0 and 0 < hits[0].score <= 1.0001


def test_new_chunks_are_found_at_once_and_deletes_vanish_everywhere(
        tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    config = TextIndexConfig(bm25_rebuild_min=5)
    with TextIndex(tmp_path, hash_embedder, config=config) as index:
        index.apply([_update(hash_embedder, f"kb/{i}", [f"filler passage number {i} about "
                                                           "weather and tides"])
                     for i in range(20)])
        index.apply([_update(hash_embedder, "kb/secret", ["the vault code is QZ-7781"])])
        for mode in ("vector", "bm25", "hybrid"):
            assert index.search("vault code QZ-7781", 1, mode=mode)[0].source_id == "kb/secret"
        index.apply([SourceUpdate(op="delete", source_id="kb/secret")])
        for mode in ("vector", "bm25", "hybrid"):
            assert "kb/secret" not in {h.source_id
                                       for h in index.search("vault code QZ-7781", 10, mode=mode)}
        # Many changes: BM25 rebuilds in the background, replaying what came meanwhile.
        for i in range(20):
            index.apply([_update(hash_embedder, f"kb/new{i}", [f"lighthouse keeper log {i}"])])
        assert index.bm25 is not None
        index.bm25.wait(30)
        assert index.bm25.builds >= 2
        assert index.search("lighthouse keeper log 7", 1, mode="bm25")[0].source_id == "kb/new7"
        assert len(index.bm25) == len(index) == 40


def test_restart_keeps_vectors_and_bm25(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply([_update(hash_embedder, "a", ["the heron nests in reeds PN-1001"]),
                     _update(hash_embedder, "b", ["tidal charts for the estuary"])])
    with TextIndex(tmp_path, hash_embedder) as index:
        assert len(index) == 2
        assert index.search("PN-1001", 1, mode="bm25")[0].source_id == "a"
        assert index.search("tidal estuary charts", 1, mode="vector")[0].source_id == "b"
        index.snapshot()
        # A crash after the docstore commit, before the next snapshot: the replica reconciles.
        index.apply([_update(hash_embedder, "c", ["otters under the pier PN-2002"]),
                     SourceUpdate(op="delete", source_id="a")])
        assert index.docstore is not None
        index.docstore.close()
        index.docstore = None
    with TextIndex(tmp_path, hash_embedder) as index:
        assert len(index) == 2
        assert index.search("PN-2002", 1, mode="bm25")[0].source_id == "c"
        assert "a" not in {h.source_id for h in index.search("PN-1001 heron", 5)}


def test_hnsw_past_the_threshold_matches_exact_and_search_never_waits(
        tmp_path: Path) -> None:
    emb = HashEmbedder(dim=64)
    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.sample(words, 8)) for _ in range(600)]
    exact_dir, hnsw_dir = tmp_path / "exact", tmp_path / "hnsw"
    small = TextIndexConfig(ann=AnnConfig(hnsw_threshold=300, ef_search=64))
    with TextIndex(exact_dir, emb) as exact, TextIndex(hnsw_dir, emb, config=small) as ann:
        exact.apply([_update(emb, f"s{i}", [t]) for i, t in enumerate(texts[:250])])
        ann.apply([_update(emb, f"s{i}", [t]) for i, t in enumerate(texts[:250])])
        assert ann.faiss is not None and ann.faiss.kind == "flat"
        answers: list[int] = []
        stop = threading.Event()

        def searcher() -> None:
            while not stop.is_set():
                answers.append(len(ann.search(texts[0], 3, mode="vector")))

        thread = threading.Thread(target=searcher)
        thread.start()
        for start in range(250, 600, 50):
            batch = [_update(emb, f"s{i}", [texts[i]]) for i in range(start, start + 50)]
            exact.apply(batch)
            ann.apply(batch)
        ann.apply([SourceUpdate(op="delete", source_id="s5")])
        exact.apply([SourceUpdate(op="delete", source_id="s5")])
        ann.faiss.wait(60)
        stop.set()
        thread.join()
        assert ann.faiss.kind == "hnsw" and len(ann) == len(exact) == 599
        assert answers and min(answers) == 3  # searches kept answering during the build
        same = [exact.search(t, 1, mode="vector")[0].chunk_id
                == ann.search(t, 1, mode="vector")[0].chunk_id for t in texts[::10]]
        assert np.mean(same) >= 0.95
        assert "s5" not in {h.source_id for h in ann.search(texts[5], 5, mode="vector")}
    with TextIndex(hnsw_dir, emb, config=small) as again:  # the HNSW snapshot loads back
        assert again.faiss is not None and again.faiss.kind == "hnsw" and len(again) == 599
        assert "s5" not in {h.source_id for h in again.search(texts[5], 5, mode="vector")}


@pytest.mark.slow
def test_chinese_questions_take_the_multilingual_route(tmp_path: Path, minilm: Embedder) -> None:
    from kinject.index.embedders import load_embedder

    use = load_embedder("use-multilingual")
    en = ["Mira Ashdown was born in Port Avalen and studied marine biology.",
          "Tomas Greythorn repairs clocks in Thistlebury and collects maps.",
          "Ada Hollis founded the Duskmoor Observatory after studying linguistics."]
    zh = ["王小明出生在大理，大学学习海洋生物学。",
          "李雨桐在泉州修理钟表，喜欢收藏地图。",
          "陈思远毕业后加入了星河天文台，研究语言学。"]
    with TextIndex(tmp_path, minilm, zh_embedder=use) as index:
        # The worker sent no multilingual vectors (an old worker): the replica embeds them.
        index.apply([_update(minilm, f"en{i}", [t]) for i, t in enumerate(en)]
                    + [_update(minilm, f"zh{i}", [t]) for i, t in enumerate(zh)])
        assert index.zh is not None and len(index.zh) == 3
        hit = index.search("陈思远在哪里工作？", 1)[0]
        assert hit.source_id == "zh2" and hit.meta["space"] == "zh"
        assert index.search("谁喜欢收藏地图", 1, mode="vector")[0].source_id == "zh1"
        hit = index.search("Who collects maps?", 1)[0]
        assert hit.source_id == "en1" and hit.meta["space"] == "main"
        assert index.search("Chinese", 3, filters=None)
    with TextIndex(tmp_path, minilm, zh_embedder=use) as index:  # and after a restart
        assert index.search("谁出生在大理？", 1)[0].source_id == "zh0"


def test_chunk_events_carry_multilingual_vectors_and_read_v1(hash_embedder: HashEmbedder
                                                            ) -> None:
    from kinject.index.changes import ExtraVectors

    u = _update(hash_embedder, "kb/zh", ["王小明出生在大理。", "plain English"], ts=1700000000.0)
    extra = ExtraVectors(space="zh", embedder="use-multilingual", positions=(0,),
                         vectors=np.ones((1, 8), np.float32) / np.sqrt(8))
    import dataclasses
    import json

    v2 = encode_update(dataclasses.replace(u, extra=(extra,)))
    assert json.loads(v2)["v"] == 2
    back = decode_update(v2)
    assert back.extra[0].positions == (0,) and back.extra[0].vectors.shape == (1, 8)
    v1 = encode_update(u)  # without extra vectors the event stays v1 for older replicas
    body = json.loads(v1)
    assert body["v"] == 1 and "extra" not in body
    assert decode_update(v1).extra == ()
    body["v"] = 3
    with pytest.raises(ValueError, match="version"):
        decode_update(json.dumps(body).encode())


def test_bm25_index_alone() -> None:
    bm = Bm25Index(rebuild_min=2)
    bm.reset([1, 2], ["red falcon cliffs", "tax filing deadline"])
    bm.add([3], ["falcon chicks hatch"])
    assert [r for r, _ in bm.search("falcon", 5)] in ([1, 3], [3, 1])
    assert bm.search("falcon", 5, allowed=[3])[0][0] == 3
    bm.remove([1])
    assert [r for r, _ in bm.search("falcon", 5)] == [3]
    assert bm.search("nothing matches", 5) == []
    with pytest.raises(ValueError):
        bm.search("x", 0)
    t0 = time.perf_counter()
    bm.search("falcon", 1)
    assert time.perf_counter() - t0 < 1.0


def test_workers_embed_only_chinese_chunks_a_second_time(tmp_path: Path) -> None:
    from kinject.config import KafkaSettings
    from kinject.ingest.pipeline import IngestConfig
    from kinject.stream.ingest_worker import IngestWorker, _Pending

    class Counting(HashEmbedder):
        seen: list[str] = []

        def encode(self, texts: Any, *, batch_size: int = 32) -> np.ndarray:
            self.seen.extend(texts)
            return super().encode(texts)

    zh = Counting(dim=32)
    worker = IngestWorker(KafkaSettings(), "127.0.0.1:1", IngestConfig(), HashEmbedder(64),
                          zh_embedder=zh)
    en_part = _update(HashEmbedder(64), "kb/en", ["plain English text"])
    zh_part = _update(HashEmbedder(64), "kb/zh", ["English first", "王小明出生在大理。"])
    pending = [_Pending(None, u.source_id, "upsert", list(u.chunks), ("t", 0, i), None)
               for i, u in enumerate((en_part, zh_part))]
    updates = worker._embed(pending)
    assert zh.seen == ["王小明出生在大理。"]  # one call, only the Chinese chunk
    assert updates[0].extra == ()
    (extra,) = updates[1].extra
    assert extra.space == "zh" and extra.positions == (1,) and extra.vectors.shape == (1, 32)
    back = decode_update(encode_update(updates[1]))
    with TextIndex(tmp_path, HashEmbedder(64), zh_embedder=zh) as index:
        index.apply([back, updates[0]])
        assert index.zh is not None and len(index.zh) == 1
        assert zh.seen == ["王小明出生在大理。"]  # the replica used the vectors it was sent
        assert index.search("王小明在哪里出生", 1)[0].source_id == "kb/zh"


def test_search_never_waits_for_a_bm25_rebuild() -> None:
    rows = list(range(1, 201))
    texts = [f"harbour log entry {i}" for i in rows]
    bm = Bm25Index(rebuild_min=1000)
    bm.reset(rows, texts)
    started, release = threading.Event(), threading.Event()

    def slow_loader() -> tuple[list[int], list[str]]:  # a big corpus being read
        started.set()
        release.wait(10)
        return rows, texts

    bm.set_loader(slow_loader)
    bm.rebuild_async()
    assert started.wait(5)
    t0 = time.perf_counter()
    bm.add([500], ["storm warning KX-9"])  # arrives during the rebuild
    bm.remove([7])
    assert bm.search("KX-9 storm", 1)[0][0] == 500
    assert 7 not in [r for r, _ in bm.search("harbour log entry 7", 5)]
    assert time.perf_counter() - t0 < 1.0  # answered while the rebuild waits
    release.set()
    bm.wait(10)
    assert bm.builds == 2
    # The journal replayed onto the new base: the change made meanwhile survives the swap.
    assert bm.search("KX-9 storm", 1)[0][0] == 500
    assert 7 not in [r for r, _ in bm.search("harbour log entry 7", 5)]
