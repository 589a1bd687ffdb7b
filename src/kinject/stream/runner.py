"""Run kinject's stream workers in the foreground until SIGINT/SIGTERM.

Scale-out is Kafka's: run more workers (``--workers N`` here, more processes, more machines)
in the same consumer group and the broker spreads the partitions over them.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from kinject.config import Settings
from kinject.errors import KinjectError
from kinject.logs import kafka_closing

if TYPE_CHECKING:
    from kinject.index.clip_embedder import ClipEmbedder
    from kinject.ingest.pipeline import IngestConfig

log = logging.getLogger(__name__)


def ingest_config(settings: Settings) -> IngestConfig:
    """The ingest stage's frozen config, from the settings."""
    from kinject.ingest.audio import AudioConfig
    from kinject.ingest.pipeline import IngestConfig
    from kinject.ingest.uris import UriPolicy

    ing = settings.ingest
    return IngestConfig(chunk_size=ing.chunk_size, chunk_overlap=ing.chunk_overlap,
                        ocr_engine=ing.ocr_engine, enrich=ing.enrich, redact_pii=ing.redact_pii,
                        min_informativeness=ing.min_informativeness,
                        uris=UriPolicy(dirs=tuple(ing.uri_allow_dirs),
                                       url_prefixes=tuple(ing.uri_allow_urls),
                                       deny_dirs=(settings.data_dir,)),
                        html_max_bytes=ing.html_max_bytes, html_max_depth=ing.html_max_depth,
                        pdf_max_pages=ing.pdf_max_pages, image_max_pixels=ing.image_max_pixels,
                        audio=AudioConfig(model=settings.models.whisper,
                                          models_dir=settings.models_dir,
                                          threads=settings.models.threads or 0,
                                          max_bytes=ing.audio_max_bytes,
                                          max_seconds=ing.audio_max_seconds))


class _Crashed:
    def __init__(self) -> None:
        self.error: BaseException | None = None


def run_ingest_workers(settings: Settings, count: int = 1,
                       stop: threading.Event | None = None, *, corpus: bool = False) -> None:
    """Start ``count`` ingest workers in the group ``kinject-ingest`` and block; with
    ``corpus`` also a corpus materialiser (`kinject worker`; `kinject serve` runs its own).

    Returns after SIGINT/SIGTERM (or ``stop``) once every worker has committed and closed;
    raises KinjectError when a worker dies, so a supervisor restarts the process.
    """
    from kinject.index.embedders import load_embedder
    from kinject.index.text_index import load_zh_embedder
    from kinject.stream.broker import connect
    from kinject.stream.dlq_store import open_dead_letter_store
    from kinject.stream.ingest_worker import IngestWorker

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    stop = stop or threading.Event()
    _stop_on_signals(stop)
    config = ingest_config(settings)
    with connect(settings.kafka) as bootstrap:
        embedder = load_embedder(settings.models.embedder, threads=settings.models.threads)
        zh_embedder = load_zh_embedder(settings)
        clip = _clip(settings)
        crashed = _Crashed()
        dlq_store = open_dead_letter_store(settings.data_dir)

        def work(worker: IngestWorker) -> None:
            try:
                worker.run(stop)
            except BaseException as exc:  # handed to the main thread, which exits non-zero
                log.exception("ingest worker crashed")
                crashed.error = exc
                stop.set()

        workers = [IngestWorker(settings.kafka, bootstrap, config, embedder,
                                zh_embedder=zh_embedder,
                                batch_size=settings.ingest.batch_size, clip=clip,
                                dlq_store=dlq_store,
                                record_timeout_s=settings.ingest.record_timeout_s)
                   for _ in range(count)]
        threads = [threading.Thread(target=work, args=(w,), name=f"kinject-ingest-{i}")
                   for i, w in enumerate(workers)]
        for t in threads:
            t.start()
        if corpus:
            from kinject.stream.corpus_runner import start_corpus_materialiser

            materialiser = start_corpus_materialiser(settings, bootstrap, stop)
            if materialiser is not None:
                threads.append(materialiser)
        log.info("%d ingest worker(s) in group %s on %s", count, workers[0].group_id, bootstrap)
        while not stop.wait(0.5):
            pass
        with kafka_closing():
            for t in threads:
                t.join()
        dlq_store.close()
        done = sum(w.processed for w in workers)
        letters = sum(w.dead_letters for w in workers)
        log.info("ingest workers stopped: %d records processed, %d dead letters", done, letters)
        if crashed.error is not None:
            raise KinjectError(f"an ingest worker crashed: {crashed.error}") from crashed.error


def _clip(settings: Settings) -> ClipEmbedder | None:
    """The warmed-up CLIP embedder for the image index, or None when it is off."""
    from kinject.index.clip_embedder import load_clip_embedder

    m = settings.models
    if not (m.clip_checkpoint or "").strip():
        log.info("CLIP image index off (KINJECT_MODELS__CLIP_CHECKPOINT unset): images are "
                 "indexed through their captions and OCR text")
        return None
    assert m.clip_checkpoint is not None
    return load_clip_embedder(m.clip_model, m.clip_checkpoint, m.device)


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    # `kill -USR1 <pid>` writes every thread's stack to stderr: what a stuck worker waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
