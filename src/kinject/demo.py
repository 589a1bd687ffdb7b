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
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kinject.config import Settings
from kinject.errors import KinjectError
from kinject.logs import quiet_while

log = logging.getLogger(__name__)


def _wait_for(cond: Callable[[], bool], timeout_s: float, what: str,
              interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise KinjectError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _in_background(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn`` in a daemon thread, so Ctrl-C never waits for a model to finish loading."""
    future: Future[Any] = Future()

    def target() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True, name="kinject-demo-load").start()
    return future


def _wait_answerable(index: Any, source_ids: list[str], t0: float,
                     timeout_s: float) -> dict[str, float]:
    """Seconds from ``t0`` until each source is in the index (its lineage is written)."""
    pending, seen = set(source_ids), {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for sid in list(pending):
            if index.docstore.lineage(sid):
                seen[sid] = time.perf_counter() - t0
                pending.discard(sid)
        if time.monotonic() > deadline:
            raise KinjectError(f"timed out after {timeout_s:.0f}s waiting for {sorted(pending)}"
                               " to be indexed")
        time.sleep(0.02)
    return seen


def run_demo(settings: Settings, *, fresh: bool = True, console: Console | None = None) -> bool:
    """Run the demo; return True when every question got a right, cited answer."""
    from kinject.demo_data import DEMO_QUESTIONS, sample_records, write_sample_kb
    from kinject.index.embedders import load_embedder
    from kinject.index.text_index import TextIndex
    from kinject.ingest.envelope import encode_record
    from kinject.models import load_generator
    from kinject.rag.reader import Ct2Reader
    from kinject.rag.reader_model import load_reader
    from kinject.rag.service import RagConfig, RagService
    from kinject.stream.broker import connect
    from kinject.stream.clients import make_producer
    from kinject.stream.ingest_worker import IngestWorker
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.stream.runner import ingest_config
    from kinject.stream.topics import Topics

    out = console or Console()
    # Topics and a consumer group of its own: on a user's real cluster the demo must not
    # join the production ingest group or write into the production topics.
    kafka = settings.kafka.model_copy(update={"topic_prefix":
                                              f"{settings.kafka.topic_prefix}-demo"})
    root = settings.data_dir / "demo"
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False,
                        disable=not Console(stderr=True).is_terminal)
    with progress, quiet_while(not progress.disable):
        def step(text: str) -> TaskID:
            if progress.disable:
                out.print(f"[bold cyan]>[/] {text}")
            return progress.add_task(text)

        # The generator loads in the background (the first run converts the GGUF once).
        gen_task = step("Loading the generator (SmolLM2; converted once, then cached)")
        reading = settings.rag.mode == "read"
        m = settings.models

        def load_models() -> tuple[Any, Any]:
            # One after the other, in one thread: transformers' lazy imports are not safe to
            # race from two threads.
            generator = load_generator(m.generator, settings.models_dir, m.device, m.dtype,
                                       m.quantize)
            return generator, (load_reader(m.reader, settings.models_dir, m.device)
                               if reading else None)

        models_future = _in_background(load_models)
        if reading:  # the reader too (the first run converts it once, 1.5-2.5 minutes)
            reader_task = step("Loading the reader (Qwen2.5 0.5B; converted once, then cached)")

        task = step("Starting the broker")
        t = time.perf_counter()
        with connect(kafka) as bootstrap:
            timings["broker_s"] = time.perf_counter() - t
            progress.update(task, description=f"Broker ready at {bootstrap}", completed=1,
                            total=1)
            try:
                task = step("Loading the embedder")
                embedder = load_embedder(settings.models.embedder)
                embedder.warm_up()
                progress.update(task, description=f"Embedder {embedder.name} ready",
                                completed=1, total=1)

                task = step("Writing the sample knowledge base")
                kb_dir = root / "kb"
                write_sample_kb(kb_dir)
                records = sample_records(kb_dir)
                progress.update(task, completed=1, total=1,
                                description=f"Sample knowledge base: {len(records)} sources "
                                            f"in {kb_dir}")

                task = step("Starting the ingest worker and the index materialiser")
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
                progress.update(task, completed=1, total=1)

                task = step(f"Publishing {len(records)} records to kinject.records")
                topics = Topics.from_settings(kafka)
                producer = make_producer(kafka, bootstrap)
                t_pub = time.perf_counter()
                for rec in records:
                    producer.send(topics.records, key=rec.source_id.encode(),
                                  value=encode_record(rec))
                producer.flush()
                producer.close()
                progress.update(task, description="Waiting until every record is answerable")
                latency = _wait_answerable(index, [r.source_id for r in records], t_pub, 120)
                timings["answerable_median_s"] = statistics.median(latency.values())
                timings["answerable_all_s"] = max(latency.values())
                progress.update(task, completed=1, total=1,
                                description=f"{len(records)} records indexed as {len(index)} "
                                            f"chunks, all answerable "
                                            f"{timings['answerable_all_s']:.2f}s after publishing")

                generator, loaded_reader = models_future.result()
                progress.update(gen_task, completed=1, total=1,
                                description="Generator ready")
                reader = Ct2Reader(loaded_reader) if loaded_reader is not None else None
                if reader is not None:
                    progress.update(reader_task, completed=1, total=1,
                                    description="Reader ready")
                rag = RagService(index, generator, RagConfig.from_settings(settings),
                                 reader=(lambda: reader) if reader is not None else None)
                results = []
                task = step(f"Answering {len(DEMO_QUESTIONS)} questions")
                for q in DEMO_QUESTIONS:
                    answer = rag.ask(q.question)
                    correct = any(e.lower() in answer.text.lower() for e in q.expected)
                    cited = any(c.source_id == q.source_id for c in answer.citations)
                    results.append((q, answer, correct, cited))
                    progress.advance(task)
                progress.update(task, completed=1, total=1)
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


def _report(out: Console, results: list[Any], timings: dict[str, float]) -> None:
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
