"""``kinject demo``: the whole road once, on the embedded defaults.

Broker -> sample knowledge base (CSV, JSON, English and Chinese text, a scanned page, a
captioned image) -> kinject.records -> ingest worker -> kinject.chunks -> index -> answers
with citations. The facts are invented, so a right answer proves retrieval worked.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kinject.config import KafkaSettings, Settings
from kinject.errors import KinjectError
from kinject.logs import quiet_while

if TYPE_CHECKING:
    from kinject.demo_data import DemoQuestion
    from kinject.index.embedders import Embedder
    from kinject.index.text_index import TextIndex
    from kinject.models import LoadedGenerator
    from kinject.rag.reader_model import LoadedReader
    from kinject.rag.service import RagService
    from kinject.stream.ingest_worker import IngestWorker
    from kinject.types import Answer, Record

    # A demo question asked: (question, answer, right, cited the right source)
    _Result = tuple[DemoQuestion, Answer, bool, bool]
    _Models = tuple[LoadedGenerator, LoadedReader | None]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _wait_for(cond: Callable[[], bool], timeout_s: float, what: str,
              interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise KinjectError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _in_background(fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` in a daemon thread, so Ctrl-C never waits for a model to finish loading."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True, name="kinject-demo-load").start()
    return future


def _wait_answerable(index: TextIndex, source_ids: list[str], t0: float,
                     timeout_s: float) -> dict[str, float]:
    """Seconds from ``t0`` until each source is in the index (its lineage is written)."""
    pending, seen = set(source_ids), {}
    docstore = index.docstore
    if docstore is None:
        raise KinjectError("the demo's index is not open")
    deadline = time.monotonic() + timeout_s
    while pending:
        for sid in list(pending):
            if docstore.lineage(sid):
                seen[sid] = time.perf_counter() - t0
                pending.discard(sid)
        if time.monotonic() > deadline:
            raise KinjectError(f"timed out after {timeout_s:.0f}s waiting for {sorted(pending)}"
                               " to be indexed")
        time.sleep(0.02)
    return seen


def run_demo(settings: Settings, *, fresh: bool = True, console: Console | None = None) -> bool:
    """Run the demo; return True when every question got a right, cited answer."""
    from kinject.stream.broker import connect

    out = console or Console()
    # Topics and a consumer group of its own: on a user's real cluster the demo must not
    # join the production ingest group or write into the production topics.
    kafka = settings.kafka.model_copy(update={"topic_prefix":
                                              f"{settings.kafka.topic_prefix}-demo"})
    root = _demo_root(settings, fresh)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    progress = _progress()
    with progress, quiet_while(not progress.disable):
        steps = _Steps(progress, out)
        models = _load_models_in_background(settings, steps)
        task = steps.start("Starting the broker")
        t = time.perf_counter()
        with connect(kafka) as bootstrap:
            timings["broker_s"] = time.perf_counter() - t
            steps.done(task, f"Broker ready at {bootstrap}")
            try:
                embedder = _load_embedder(settings, steps)
                records = _write_sample_kb(root / "kb", steps)
                index, worker = _start_the_road(settings, kafka, bootstrap, embedder, root,
                                                steps, stop, threads)
                _publish_until_answerable(kafka, bootstrap, records, index, steps, timings)
                rag = _answering(settings, index, models, steps)
                results = _ask_the_questions(rag, steps)
            finally:
                stop.set()
                for th in threads:
                    th.join(timeout=15)
    timings["total_s"] = time.perf_counter() - t_start
    if worker.dead_letters:
        out.print(f"[yellow]{worker.dead_letters} record(s) went to the dead-letter topic[/]")
    _report(out, results, timings)
    index.close()
    return all(c and s for _, _, c, s in results)


def _demo_root(settings: Settings, fresh: bool) -> Path:
    """The demo's own folder under the data dir, emptied first when ``fresh``."""
    root = demo_dir(settings)
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _progress() -> Progress:
    """A spinner per step on a terminal; off (plain lines instead) when stderr is not one."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False,
                    disable=not Console(stderr=True).is_terminal)


@dataclass
class _Steps:
    """The demo's steps as progress lines (printed plainly when the progress bar is off)."""

    progress: Progress
    out: Console

    def start(self, text: str) -> TaskID:
        if self.progress.disable:
            self.out.print(f"[bold cyan]>[/] {text}")
        return self.progress.add_task(text)

    def done(self, task: TaskID, description: str | None = None) -> None:
        self.progress.update(task, description=description, completed=1, total=1)


@dataclass
class _ModelsLoading:
    """The generator (and, in read mode, the reader) loading in the background."""

    future: Future[_Models]
    generator_task: TaskID
    reader_task: TaskID | None


def _load_models_in_background(settings: Settings, steps: _Steps) -> _ModelsLoading:
    """Start loading the models (the first run converts them once) while the road starts."""
    from kinject.models import load_generator
    from kinject.rag.reader_model import load_reader

    # The generator loads in the background (the first run converts the GGUF once).
    gen_task = steps.start("Loading the generator (SmolLM2; converted once, then cached)")
    reading = settings.rag.mode == "read"
    m = settings.models

    def load_models() -> _Models:
        # One after the other, in one thread: transformers' lazy imports are not safe to
        # race from two threads.
        generator = load_generator(m.generator, settings.models_dir, m.device, m.dtype,
                                   m.quantize)
        return generator, (load_reader(m.reader, settings.models_dir, m.device, m.threads or 0)
                           if reading else None)

    future = _in_background(load_models)
    reader_task = None
    if reading:  # the reader too (the first run converts it once, 1.5-2.5 minutes)
        reader_task = steps.start("Loading the reader (Qwen2.5 0.5B; converted once, then cached)")
    return _ModelsLoading(future, gen_task, reader_task)


def _load_embedder(settings: Settings, steps: _Steps) -> Embedder:
    from kinject.index.embedders import load_embedder

    task = steps.start("Loading the embedder")
    embedder = load_embedder(settings.models.embedder, threads=settings.models.threads)
    embedder.warm_up()
    steps.done(task, f"Embedder {embedder.name} ready")
    return embedder


def _write_sample_kb(kb_dir: Path, steps: _Steps) -> list[Record]:
    """The sample knowledge base on disk, and the records that carry it."""
    from kinject.demo_data import sample_records, write_sample_kb

    task = steps.start("Writing the sample knowledge base")
    write_sample_kb(kb_dir)
    records = sample_records(kb_dir)
    steps.done(task, f"Sample knowledge base: {len(records)} sources in {kb_dir}")
    return records


def _start_the_road(settings: Settings, kafka: KafkaSettings, bootstrap: str,
                    embedder: Embedder, root: Path, steps: _Steps, stop: threading.Event,
                    threads: list[threading.Thread]) -> tuple[TextIndex, IngestWorker]:
    """The index, and the ingest worker and index materialiser running in ``threads`` until
    ``stop``; returns once the worker has joined its group."""
    from kinject.index.text_index import TextIndex
    from kinject.stream.ingest_worker import IngestWorker
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.stream.runner import ingest_config

    task = steps.start("Starting the ingest worker and the index materialiser")
    index = TextIndex(root / "index", embedder).open()
    worker = IngestWorker(kafka, bootstrap, ingest_config(settings), embedder,
                          group_id=f"{kafka.topic_prefix}-ingest",
                          record_timeout_s=settings.ingest.record_timeout_s)
    materialiser = IndexMaterialiser(kafka, bootstrap, index)
    for target in (worker.run, materialiser.run):
        th = threading.Thread(target=target, args=(stop,), daemon=True)
        th.start()
        threads.append(th)
    # A long-running worker has joined its group long before data arrives; the
    # demo waits for that too, so it measures the road, not the start-up.
    _wait_for(worker.ready.is_set, 60, "the ingest worker to join its group")
    steps.done(task)
    return index, worker


def _publish_until_answerable(kafka: KafkaSettings, bootstrap: str, records: list[Record],
                              index: TextIndex, steps: _Steps, timings: dict[str, float]
                              ) -> None:
    """Publish the records to kinject.records and time until every one is answerable."""
    from kinject.ingest.envelope import encode_record
    from kinject.stream.clients import make_producer
    from kinject.stream.topics import Topics

    task = steps.start(f"Publishing {len(records)} records to kinject.records")
    topics = Topics.from_settings(kafka)
    producer = make_producer(kafka, bootstrap)
    t_pub = time.perf_counter()
    for rec in records:
        producer.send(topics.records, key=rec.source_id.encode(),
                      value=encode_record(rec))
    producer.flush()
    producer.close()
    steps.progress.update(task, description="Waiting until every record is answerable")
    latency = _wait_answerable(index, [r.source_id for r in records], t_pub, 120)
    timings["answerable_median_s"] = statistics.median(latency.values())
    timings["answerable_all_s"] = max(latency.values())
    steps.done(task, f"{len(records)} records indexed as {len(index)} "
                     f"chunks, all answerable "
                     f"{timings['answerable_all_s']:.2f}s after publishing")


def _answering(settings: Settings, index: TextIndex, models: _ModelsLoading, steps: _Steps
               ) -> RagService:
    """The RAG service over the index, once the models have loaded."""
    from kinject.rag.reader import Ct2Reader
    from kinject.rag.service import RagConfig, RagService

    generator, loaded_reader = models.future.result()
    steps.done(models.generator_task, "Generator ready")
    reader = Ct2Reader(loaded_reader) if loaded_reader is not None else None
    if reader is not None and models.reader_task is not None:
        steps.done(models.reader_task, "Reader ready")
    return RagService(index, generator, RagConfig.from_settings(settings),
                      reader=(lambda: reader) if reader is not None else None)


def _ask_the_questions(rag: RagService, steps: _Steps) -> list[_Result]:
    """Each demo question asked: (question, answer, right, cited the right source)."""
    from kinject.demo_data import DEMO_QUESTIONS

    results: list[_Result] = []
    task = steps.start(f"Answering {len(DEMO_QUESTIONS)} questions")
    for q in DEMO_QUESTIONS:
        answer = rag.ask(q.question)
        correct = any(e.lower() in answer.text.lower() for e in q.expected)
        cited = any(c.source_id == q.source_id for c in answer.citations)
        results.append((q, answer, correct, cited))
        steps.progress.advance(task)
    steps.done(task)
    return results


def _report(out: Console, results: list[_Result], timings: dict[str, float]) -> None:
    table = Table(title="kinject demo: answers from the sample knowledge base", show_lines=True)
    table.add_column("question", overflow="fold")
    table.add_column("answer", overflow="fold")
    table.add_column("cited source", overflow="fold")
    table.add_column("ok", justify="center")
    for q, answer, correct, cited in results:
        sources = ", ".join(c.source_id for c in answer.citations) or "-"
        table.add_row(q.question, answer.text, sources,
                      "[green]yes[/]" if correct and cited else "[red]no[/]")
    out.print(table)
    n_ok = sum(1 for _, _, c, s in results if c and s)
    out.print(f"answers right and cited: {n_ok}/{len(results)}")
    out.print(f"publish -> answerable: median {timings['answerable_median_s']:.2f}s per record, "
              f"all {timings['answerable_all_s']:.2f}s (OCR included); broker start "
              f"{timings['broker_s']:.2f}s; whole demo {timings['total_s']:.1f}s")


def demo_dir(settings: Settings) -> Path:
    return settings.data_dir / "demo"
