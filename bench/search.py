"""Search: speed against LangChain's FAISS store, HNSW recall, and retrieval per language.

Part 1 (speed, recall): 100k generated chunks (``--quick``: 20k), English and Chinese
biographies of invented people, embedded by the hash embedder (384-d bag of words: texts
that share words are close, so neighbours are meaningful; random vectors would not be).
They go through ``TextIndex.apply`` like a replica's updates; past ``hnsw_threshold``
(half the corpus) the index builds HNSW in the background. Measured:

- ``kinject_qps``: ``TextIndex.search_vector(vector, 10)`` (HNSW, chunks read from the
  docstore) vs LangChain FAISS ``similarity_search_by_vector`` on the same vectors
  (``vs_langchain`` = kinject / LangChain), and ``kinject_hybrid_qps`` for
  ``TextIndex.search(text, 10)`` (embed + HNSW + BM25 + fusion);
- ``recall_at_10``: HNSW top 10 against exact (brute-force) top 10, a hit counting when its
  exact score reaches the exact 10th score (bag-of-words vectors tie often; HNSW-Flat scores
  are exact); ``recall_at_10_same_ids`` counts only the very same ids.
- ``http_p50_ms``/``http_p99_ms``: the same index served by ``kinject serve``'s app (uvicorn
  in this process, the settings a user gets with ``KINJECT_MODELS__EMBEDDER=hash:384``),
  ``GET /v1/search?q=...&k=10`` over a real socket with httpx, one client, after a warm-up;
  ``http_qps`` is that client's rate.

Part 2 (languages): 40 English and 40 Chinese invented people, one question each phrased
unlike the text, with the real MiniLM and multilingual USE. Recall@1/@5 per language for
MiniLM vectors, BM25, MiniLM+BM25 fused (RRF), the language route (Chinese queries search
the USE space) alone, the route fused with BM25 (the default), and the route with the USE
space also searched for English queries.

    python bench/search.py --quick
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Nothing in this benchmark may reach a model hub: every model comes from a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402
from kinject.index.ann_index import AnnConfig  # noqa: E402
from kinject.index.changes import SourceUpdate  # noqa: E402
from kinject.index.embedders import Embedder, HashEmbedder  # noqa: E402
from kinject.index.text_index import TextIndex, TextIndexConfig  # noqa: E402
from kinject.ingest.normalise import detect_lang  # noqa: E402
from kinject.types import Chunk, content_hash  # noqa: E402


def _updates(emb: Embedder, texts: list[str], prefix: str, start: int = 0
             ) -> list[SourceUpdate]:
    vecs = emb.encode(texts)
    out = []
    for i, (t, v) in enumerate(zip(texts, vecs, strict=True)):
        sid = f"{prefix}{start + i}"
        chunk = Chunk(chunk_id=content_hash(sid, t), doc_id=sid, source_id=sid, text=t,
                      lang=detect_lang(t))
        out.append(SourceUpdate(op="upsert", source_id=sid, chunks=(chunk,),
                                vectors=v[None, :], embedder=emb.name))
    return out


def _queries(texts: list[str], n: int, rng: random.Random) -> list[str]:
    """Query-like strings: a random third of a chunk's words (characters for Chinese)."""
    out = []
    for t in rng.sample(texts, n):
        words = t.split() if " " in t else list(t)
        keep = sorted(rng.sample(range(len(words)), max(3, len(words) // 3)))
        out.append((" " if " " in t else "").join(words[i] for i in keep))
    return out


def speed(args: Any) -> dict[str, Any]:
    n = 20_000 if args.quick else 100_000
    n_queries = 200 if args.quick else 500
    rng = random.Random(args.seed)
    n_zh = n // 5
    texts = common.synthetic_texts(n - n_zh, "en", args.seed) + common.synthetic_texts(
        n_zh, "zh", args.seed)
    rng.shuffle(texts)
    emb = HashEmbedder(dim=384)
    config = TextIndexConfig(ann=AnnConfig(hnsw_threshold=n // 2))
    tmp = Path(tempfile.mkdtemp(prefix="kinject-bench-search-"))
    # <data dir>/index: where `kinject serve` finds it for the HTTP part
    index = TextIndex(tmp / "data" / "index", emb, config=config).open()
    t0 = time.perf_counter()
    batch = 1000
    for start in range(0, n, batch):
        index.apply(_updates(emb, texts[start:start + batch], "doc/", start))
        if start % (batch * 10) == 0:
            common.progress(f"applied {start + batch:,} / {n:,} chunks")
    assert index.faiss is not None and index.bm25 is not None
    common.progress("waiting for the background HNSW and BM25 builds")
    index.faiss.wait()
    index.bm25.wait()
    ingest_s = time.perf_counter() - t0
    common.progress(f"index ready in {ingest_s:.1f} s: {index.faiss.kind}, {len(index):,} "
                    "vectors")

    queries = _queries(texts, n_queries, rng)
    qvecs = emb.encode(queries)
    store = index.docstore
    assert store is not None
    ids, all_vecs = store.vectors()

    # Exact top 10 by brute force, and HNSW's.
    sims = qvecs @ all_vecs.T
    exact_ids = ids[np.argsort(-sims, axis=1)[:, :10]]
    tenth = np.sort(sims, axis=1)[:, -10]
    scores, hnsw_ids = index.faiss.search(qvecs, 10)
    # Bag-of-words vectors tie often: a hit whose exact score reaches the exact 10th score is
    # as good as the exact one it displaced (HNSW-Flat scores are exact inner products).
    recall = float(np.mean([(scores[i] >= tenth[i] - 1e-5).sum() / 10
                            for i in range(len(queries))]))
    recall_ids = float(np.mean([len(set(exact_ids[i]) & set(hnsw_ids[i].tolist())) / 10
                                for i in range(len(queries))]))

    def run_kinject() -> None:
        for v in qvecs:
            index.search_vector(v, 10)

    def run_hybrid() -> None:
        for q in queries:
            index.search(q, 10)

    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.embeddings import Embeddings

    class _Fixed(Embeddings):
        def embed_documents(self, docs: list[str]) -> list[list[float]]:
            return emb.encode(docs).tolist()

        def embed_query(self, text: str) -> list[float]:
            return emb.encode([text])[0].tolist()

    t_lc = time.perf_counter()
    by_row = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    chunks = store.chunks_by_rows(ids.tolist())
    store_lc = FAISS.from_embeddings(
        [(chunks[int(r)].text, all_vecs[by_row[int(r)]].tolist()) for r in ids.tolist()],
        _Fixed(), distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    common.progress(f"LangChain FAISS built in {time.perf_counter() - t_lc:.1f} s")

    def run_langchain() -> None:
        for v in qvecs:
            store_lc.similarity_search_by_vector(v.tolist(), k=10)

    t_k = common.median(common.timeit(run_kinject, args.repeats))
    t_l = common.median(common.timeit(run_langchain, args.repeats))
    t_h = common.median(common.timeit(run_hybrid, max(1, args.repeats // 2)))
    index.close()
    http = _http(tmp / "data", queries, n // 2)
    return {
        "chunks": n,
        "index_kind": "hnsw",
        "ingest_s": round(ingest_s, 1),
        "kinject_qps": round(len(queries) / t_k, 1),
        "langchain_qps": round(len(queries) / t_l, 1),
        "vs_langchain": round(t_l / t_k, 2),
        "kinject_hybrid_qps": round(len(queries) / t_h, 1),
        "recall_at_10": round(recall, 4),
        "recall_at_10_same_ids": round(recall_ids, 4),
        **http,
    }


def _http(data_dir: Path, queries: list[str], hnsw_threshold: int) -> dict[str, Any]:
    """Latency of GET /v1/search over a socket, on the index just built."""
    import httpx

    from kinject.api.app import create_app
    from kinject.config import load_settings
    from kinject.serve import ApiServer
    from kinject.service import KinjectService

    settings = load_settings(data_dir=data_dir, models={"embedder": "hash:384"},
                             index={"hnsw_threshold": hnsw_threshold})
    with KinjectService(settings) as svc:
        svc.index.faiss.wait()  # type: ignore[union-attr]
        svc.index.bm25.wait()  # type: ignore[union-attr]
        server = ApiServer(create_app(svc)).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for q in queries[:20]:  # warm-up: first requests pay for lazy imports
                    client.get("/v1/search", params={"q": q, "k": 10}).raise_for_status()
                took = []
                t0 = time.perf_counter()
                for q in queries:
                    t = time.perf_counter()
                    r = client.get("/v1/search", params={"q": q, "k": 10})
                    took.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    assert len(r.json()["hits"]) == 10, r.text[:200]
                wall = time.perf_counter() - t0
        finally:
            server.stop()
    took.sort()
    common.progress(f"HTTP /v1/search: p50 {statistics.median(took):.1f} ms, p99 "
                    f"{took[int(0.99 * (len(took) - 1))]:.1f} ms over {len(took)} queries")
    return {"http_p50_ms": round(statistics.median(took), 2),
            "http_p99_ms": round(took[int(0.99 * (len(took) - 1))], 2),
            "http_qps": round(len(took) / wall, 1)}


# --- languages -----------------------------------------------------------------------------

_EN_Q = ["Where was {name} born?", "What subject did {name} study at university?",
         "Which organisation did {name} work for after studying?"]
_ZH_Q = ["{name}是在哪里出生的？", "{name}上大学时学的是什么专业？",
         "{name}毕业以后去了哪家单位工作？"]


def _people(lang: str, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(name, biography) of ``n`` people with distinct names."""
    make = common.english_bio if lang == "en" else common.chinese_bio
    seen: dict[str, str] = {}
    while len(seen) < n:
        bio = make(rng)
        name = bio.split(" was born")[0] if lang == "en" else bio.split("于")[0]
        seen.setdefault(name, bio)
    return list(seen.items())


def languages(args: Any) -> dict[str, Any]:
    from kinject.index.embedders import load_embedder

    rng = random.Random(args.seed)
    minilm, use = load_embedder("minilm"), load_embedder("use-multilingual")
    people = {lang: _people(lang, 40, rng) for lang in ("en", "zh")}
    tmp = Path(tempfile.mkdtemp(prefix="kinject-bench-lang-"))
    texts = [bio for lang in ("en", "zh") for _, bio in people[lang]]
    t0 = time.perf_counter()
    with TextIndex(tmp / "i", minilm, zh_embedder=use) as index:
        index.apply(_updates(minilm, texts, "p/"))
    common.progress(f"bilingual index built in {time.perf_counter() - t0:.1f} s")
    questions = {
        lang: [((_EN_Q if lang == "en" else _ZH_Q)[i % 3].format(name=name), f"p/{off + i}")
               for i, (name, _) in enumerate(people[lang])]
        for lang, off in (("en", 0), ("zh", 40))
    }
    setups = {
        "minilm_vector": (False, "vector", False),
        "bm25": (False, "bm25", False),
        "minilm_bm25_rrf": (False, "hybrid", False),
        "route_vector": (True, "vector", False),
        "route_bm25_rrf": (True, "hybrid", False),
        "route_use_for_all_rrf": (True, "hybrid", True),
    }
    out: dict[str, Any] = {}
    for name, (route, mode, zh_all) in setups.items():
        config = TextIndexConfig(zh_for_english=zh_all)
        with TextIndex(tmp / "i", minilm, zh_embedder=use if route else None,
                       config=config) as index:
            row: dict[str, float] = {}
            for lang, qs in questions.items():
                ranks = []
                for q, want in qs:
                    got = [h.source_id for h in index.search(q, 5, mode=mode)]
                    ranks.append(got.index(want) + 1 if want in got else 99)
                row[f"{lang}_at_1"] = round(statistics.mean(r == 1 for r in ranks), 3)
                row[f"{lang}_at_5"] = round(statistics.mean(r <= 5 for r in ranks), 3)
        out[name] = row
        common.progress(f"{name}: {row}")
    return out


def main() -> None:
    args = common.parse_args(__doc__ or "", repeats=(3, 5),
                             extra=lambda p: p.add_argument("--skip-languages",
                                                            action="store_true"))
    result: dict[str, Any] = {"bench": "search", "quick": args.quick, **common.environment()}
    result.update(speed(args))
    if not args.skip_languages:
        lang = languages(args)
        result["lang_recall"] = lang
        default = lang["route_bm25_rrf"]
        result["recall_at_1_en"] = default["en_at_1"]
        result["recall_at_1_zh"] = default["zh_at_1"]
    common.emit(result)


if __name__ == "__main__":
    main()
