"""What retrieval finds on documents shaped like real ones: every chunk of a section under its
heading, case that tells commands apart, and fusion that keeps each retriever's best hit."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from kinject.index.bm25_tokens import tokenize
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import Embedder, HashEmbedder
from kinject.index.text_index import TextIndex, TextIndexConfig
from kinject.index.text_search import _convex, _rrf
from kinject.ingest.normalise import detect_lang
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Chunk, Record, content_hash


def _indexed(emb: Embedder, record: Record, config: IngestConfig) -> SourceUpdate:
    chunks = tuple(ingest_record(record, config).chunks)
    return SourceUpdate(op="upsert", source_id=record.source_id, chunks=chunks,
                        vectors=emb.encode([c.text for c in chunks]), embedder=emb.name)


def _rows(emb: Embedder, source_id: str, texts: list[str]) -> list[SourceUpdate]:
    out = []
    for i, text in enumerate(texts):
        sid = f"{source_id}/{i}"
        chunk = Chunk(content_hash(sid, text), sid, sid, text, ordinal=0, lang=detect_lang(text),
                      kind="csv", meta={"unit": "row"})
        out.append(SourceUpdate(op="upsert", source_id=sid, chunks=(chunk,),
                                vectors=emb.encode([text]), embedder=emb.name))
    return out


def _filler(topic: str, n: int) -> str:
    return "".join(f"<p>Paragraph {i} of the {topic} notes describes step {i} of the routine "
                   f"in plain words, with nothing else to add here.</p>" for i in range(n))


def test_a_later_chunk_of_a_section_is_found_by_the_section_heading(tmp_path: Path) -> None:
    # Two long sections tell the same routine apart only by their headings; the fact
    # asked for sits in the fourth chunk of each, far from the heading.
    page = ("<html><body><h1>Lighthouse manual</h1>"
            f"<h2>Night shift</h2>{_filler('alpha', 6)}"
            "<p>The keeper winds the clockwork lens at 04:00 sharp.</p>"
            f"<h2>Day shift</h2>{_filler('beta', 6)}"
            "<p>The keeper winds the clockwork lens at 13:00 sharp.</p></body></html>")
    emb = HashEmbedder(dim=512)
    config = IngestConfig(chunk_size=300, chunk_overlap=0, enrich=False)
    update = _indexed(emb, Record("kb/manual.html", kind="html", content=page.encode()), config)
    facts = [c for c in update.chunks if "winds the clockwork" in c.text]
    assert len(facts) == 2 and all(c.ordinal >= 2 for c in facts)
    with TextIndex(tmp_path, emb) as index:
        index.apply([update])
        for shift, when in (("night", "04:00"), ("day", "13:00")):
            for mode in ("hybrid", "bm25", "vector"):
                top = index.search(f"On the {shift} shift, when does the keeper wind the "
                                   "clockwork lens?", 1, mode=mode)[0]
                assert when in top.text, (shift, mode, top.text)
                assert top.meta["section"] == f"Lighthouse manual > {shift.title()} shift"


def test_case_tells_dpkg_options_apart(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    rows = [
        "command: dpkg -l package_name_pattern. action: list packages installed.",
        "command: dpkg -L package_name. action: list the contents of an installed package.",
        "command: dpkg -S file_name_pattern. action: find the package that owns a file.",
        "command: dpkg -s package_name. action: show the status of a package.",
        "command: apt-cache policy package_name. action: show the versions of a package.",
    ]
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply(_rows(hash_embedder, "t", rows))
        for mode in ("bm25", "hybrid"):
            for option, row in (("-L", 1), ("-l", 0), ("-S", 2), ("-s", 3)):
                hits = index.search(f"dpkg {option} package", 5, mode=mode)
                assert hits[0].source_id == f"t/{row}", (mode, option)
            # case-folded words still find what they did: both rows for a lower-case query
            found = {h.source_id for h in index.search("DPKG list", 2, mode=mode)}
            assert found == {"t/0", "t/1"}


def test_case_tokens_leave_ordinary_words_alone() -> None:
    assert tokenize("The Lighthouse keeper") == tokenize("the lighthouse keeper")
    assert tokenize("Python Packages") == tokenize("python packages")
    assert "=L" in tokenize("dpkg -L") and "=l" in tokenize("dpkg -l")
    assert "=PATH" in tokenize("echo $PATH") and "path" in tokenize("echo $PATH")
    assert tokenize("王小明出生在大理") == tokenize("王小明出生在大理".lower())


def test_the_best_hit_of_either_retriever_stays_on_top_after_fusion() -> None:
    # Row 1 is the vectors' clear best and BM25 never sees it; rows 10.. are middling in
    # both lists. Reciprocal rank (k=60) puts every one of them above row 1.
    dense = {1: 0.80, **{10 + i: 0.55 - 0.005 * i for i in range(20)}}
    words = {2: 9.0, **{10 + i: 4.0 - 0.1 * i for i in range(20)}}
    lists = [sorted(dense.items(), key=lambda rs: -rs[1]),
             sorted(words.items(), key=lambda rs: -rs[1])]
    assert [r for r, _ in _rrf(lists, 60)].index(1) > 10
    order = [r for r, _ in _convex([dense], words, 0.5)]
    assert set(order[:4]) >= {1, 2}  # each retriever's best is among the four read
    assert order.index(10) < 4  # and what both rank high still comes early
    # weights move the balance: all vectors is the vector order
    assert [r for r, _ in _convex([dense], words, 1.0)][:2] == [1, 10]


def test_the_passage_with_the_best_cosine_is_kept_in_the_top_four(tmp_path: Path) -> None:
    # The vectors' clear best (most words shared with the question) has only common words
    # for BM25; forty rows hold two of the question's rarer words each, so both retrievers
    # rank them middling. Reciprocal rank (k=60) sank the best passage to 16th.
    emb = HashEmbedder(dim=512)
    question = "Where does the keeper keep the spare lamp oil of the lighthouse?"
    answer = ("Where does the man of the house go? Where does the man of the house sleep at "
              "the end of the day?")
    words = ["keeper", "spare", "lamp", "oil", "lighthouse"]
    rng = random.Random(3)
    middling = [f"Tower {i}: the {a} and the {b} are listed in ledger {i} by clerk {i}."
                for i, (a, b) in enumerate(rng.sample(words, 2) for _ in range(40))]
    noise = [f"Where does ferry {i} go? It leaves the harbour at noon with crates of apples."
             for i in range(60)]
    with TextIndex(tmp_path, emb) as index:
        index.apply(_rows(emb, "d", [answer, *middling, *noise]))
        assert index.search(question, 1, mode="vector")[0].source_id == "d/0"
        assert "d/0" not in [h.source_id for h in index.search(question, 10, mode="bm25")]
        hybrid = index.search(question, 4)
        assert "d/0" in [h.source_id for h in hybrid]
        assert hybrid[0].meta["fused"] >= hybrid[-1].meta["fused"]
    with TextIndex(tmp_path, emb, config=TextIndexConfig(fusion="rrf")) as index:
        assert "d/0" not in [h.source_id for h in index.search(question, 10)]


def test_fusion_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fusion"):
        TextIndexConfig(fusion="mean")
    with pytest.raises(ValueError, match="vector_weight"):
        TextIndexConfig(vector_weight=1.5)
    assert np.isclose(TextIndexConfig().vector_weight, 0.5)


def test_an_index_saved_by_the_old_tokenizer_is_rebuilt_with_case_tokens(
        tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    import json

    from kinject.index.bm25_index import Bm25Index, _build
    from kinject.index.bm25_tokens import TOKENIZER_VERSION

    rows = ["command: dpkg -l pattern. action: list packages.",
            "command: dpkg -L name. action: list files of a package."]
    with TextIndex(tmp_path, hash_embedder) as index:
        index.apply(_rows(hash_embedder, "t", rows))
        ids = [int(r) for r in index._bm25().base_rows()] or sorted(index._bm25()._tokens)
    pointer = tmp_path / "bm25" / "bm25.json"
    assert json.loads(pointer.read_text())["tokenizer"] == TOKENIZER_VERSION
    # What an older kinject saved: the same rows, folded tokens only, no tokenizer version.
    old = Bm25Index()
    old._install(_build(ids, [[t for t in tokenize(text) if not t.startswith("=")]
                              for text in rows]))
    old.save(tmp_path / "bm25", 1)
    meta = json.loads(pointer.read_text())
    del meta["tokenizer"]
    pointer.write_text(json.dumps(meta))
    with TextIndex(tmp_path, hash_embedder) as index:  # rebuilt from the docstore's texts
        assert index.search("dpkg -L", 1, mode="bm25")[0].source_id == "t/1"
        assert index.search("dpkg -l", 1, mode="bm25")[0].source_id == "t/0"


def test_a_later_chunk_of_a_long_table_is_found_by_the_table_title(tmp_path: Path) -> None:
    # Two long tables list the same services on two hosts, told apart only by their captions;
    # the row asked for sits in a late chunk of each.
    def table(host: str, port: int) -> str:
        rows = "".join(f"<tr><td>svc{i}</td><td>{2000 + i}</td><td>runs job {i}</td></tr>"
                       for i in range(30))
        return (f"<table><caption>Services of the {host} host</caption><tr><th>Service</th>"
                f"<th>Port</th><th>Use</th></tr>{rows}"
                f"<tr><td>ntp</td><td>{port}</td><td>keeps the clock</td></tr></table>")

    page = (f"<html><body><h1>Network</h1>{table('gateway', 123)}{table('archive', 4123)}"
            "</body></html>")
    emb = HashEmbedder(dim=512)
    config = IngestConfig(chunk_size=300, chunk_overlap=0, enrich=False)
    update = _indexed(emb, Record("kb/net.html", kind="html", content=page.encode()), config)
    facts = [c for c in update.chunks if "Service: ntp." in c.text]
    assert len(facts) == 2 and all(c.ordinal >= 3 for c in facts)
    with TextIndex(tmp_path, emb) as index:
        index.apply([update])
        for host, port in (("gateway", "123"), ("archive", "4123")):
            for mode in ("hybrid", "bm25"):
                top = index.search(f"Which port does the ntp service use in the services of "
                                   f"the {host} host table?", 1, mode=mode)[0]
                assert f"Service: ntp. Port: {port}." in top.text, (host, mode, top.text)
