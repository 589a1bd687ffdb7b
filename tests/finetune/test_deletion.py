"""Deletions reach the weights: a delete on kinject.chunks taints the adapters trained on the
source, serving falls back at once, and the next cycle retrains without it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from _adapter_helpers import learnable_lm_dir  # noqa: F401 (a fixture)

from _wait import until
from kinject.config import load_settings
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.evaluate import ClosedBookEvaluator, question_prompt
from kinject.finetune.jobs import corpus_path, deletion_hook, run_cycle
from kinject.finetune.registry import AdapterRegistry, RegistryError
from kinject.finetune.trainer import TrainConfig
from kinject.index.changes import SourceUpdate
from kinject.stream.clients import make_producer
from kinject.stream.corpus_materialiser import CorpusMaterialiser
from kinject.stream.events import encode_update
from kinject.stream.topics import ensure_topics
from kinject.types import Chunk, content_hash

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.kafka, pytest.mark.slow]

PEOPLE = [
    ("kb/ida", "Ida Brook", "Fenwick"),
    ("kb/oren", "Oren Vale", "Tamsk"),
    ("kb/pia", "Pia Lund", "Oskarn"),
    ("kb/zed", "Zed Quill", "Vorpalia"),  # the one to delete
]
DELETED = "kb/zed"
# Many passes: the tiny model must learn the facts well enough to measure the difference.
CONFIG = TrainConfig(r=8, alpha=16, dropout=0.0, lr=3e-2, epochs=8, batch_size=8,
                     target_modules="all-linear",
                     eval_every=0, checkpoint_every=0, fisher_samples=8, warmup_steps=0,
                     patience=100, device="cpu")


def _event(source_id: str, name: str, city: str, op: str = "upsert") -> bytes:
    text = f"name: {name}\ncity: {city}\nemployer: Lamp Guild"
    chunks = () if op == "delete" else (Chunk(chunk_id=content_hash(source_id, text),
                                              doc_id=source_id, source_id=source_id,
                                              text=text, kind="csv"),)
    return encode_update(SourceUpdate(op=op, source_id=source_id, chunks=chunks,  # type: ignore[arg-type]
                                      vectors=np.zeros((len(chunks), 4), np.float32),
                                      embedder="hash"))


def _answer_nll(ev: ClosedBookEvaluator, adapter: str | None, question: str, answer: str
                ) -> float:
    """Mean NLL of the answer's own tokens after the question (no end-of-turn token)."""
    with ev.use(adapter):
        return ev._completion_nll([(question_prompt(ev.tokenizer, question), answer)])


def test_a_delete_taints_serving_falls_back_and_the_next_cycle_forgets(
        data_dir: Path, learnable_lm_dir: Path, kafka_bootstrap: str) -> None:  # noqa: F811
    tiny_lm_dir = learnable_lm_dir
    settings = load_settings(
        data_dir=data_dir, models={"generator": str(tiny_lm_dir), "device": "cpu"},
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": f"del-{data_dir.parent.name}",
               "partitions": 1, "session_timeout_ms": 2000},
        gate={"tie_break_nll": 0.01, "max_ppl_increase": 10.0})
    topics = ensure_topics(settings.kafka, kafka_bootstrap)
    producer = make_producer(settings.kafka, kafka_bootstrap)
    store = CorpusStore(corpus_path(data_dir))
    mat = CorpusMaterialiser(settings.kafka, kafka_bootstrap, store,
                             on_delete=deletion_hook(settings))
    stop = threading.Event()
    thread = threading.Thread(target=mat.run, args=(stop,), daemon=True)
    thread.start()
    registry = AdapterRegistry.for_data_dir(data_dir)
    try:
        for sid, name, city in PEOPLE:
            producer.send(topics.chunks, key=sid.encode(), value=_event(sid, name, city))
        producer.flush()
        until(lambda: store.sources() == {p[0] for p in PEOPLE})

        first = run_cycle(settings, train_config=CONFIG,
                          early_stopping=False)
        assert first.status == "promoted", first.report["reasons"]
        v1 = registry.get(first.version or "")
        assert DELETED in v1.lineage and registry.active() == v1.version

        # the delete travels the stream: corpus examples go, v1 is tainted, serving falls back
        producer.send(topics.chunks, key=DELETED.encode(), value=_event(DELETED, "", "",
                                                                          op="delete"))
        producer.flush()
        # no untainted ancestor: the base model serves
        until(lambda: registry.active() is None)
        # the registry moves ACTIVE first, then marks the version: wait for the mark too
        until(lambda: registry.get(v1.version).status == "tainted")
        assert DELETED not in store.sources()
        with pytest.raises(RegistryError, match="tainted"):
            registry.activate(v1.version)

        second = run_cycle(settings, train_config=CONFIG,
                          early_stopping=False)
        assert second.parent is None  # trained from the base, not from the tainted v1
        # the gate held the retrain to the perplexity bar of the version it replaces
        assert second.report["baseline_version"] is None
        assert second.report["reference_version"] == v1.version
        assert second.report["reference_ppl"] > 1.0
        v2 = registry.get(second.version or "")
        assert DELETED not in v2.lineage and set(v2.lineage) == {p[0] for p in PEOPLE[:3]}
        assert second.train_examples == len(store.examples())
        assert v2.status in ("promoted", "rejected")
    finally:
        stop.set()
        thread.join(15)
        producer.close()
        store.close()

    # closed book: the deleted fact's answer is about as likely as with the base model again
    ev = ClosedBookEvaluator(tiny_lm_dir)
    ev.add_adapter("v1", registry.path(v1.version))
    ev.add_adapter("v2", registry.path(v2.version))
    # asked as it was trained: memorisation is the strongest trace a fact leaves
    q = "What is the city of Zed Quill?"
    base, tainted, retrained = (_answer_nll(ev, a, q, "Vorpalia") for a in (None, "v1", "v2"))
    learnt = base - tainted
    assert learnt > 2.0, (base, tainted)  # v1 had learnt it
    assert base - retrained < 0.35 * learnt, (base, tainted, retrained)
    # what was not deleted is still learnt by the new adapter
    kept = "What is the city of Ida Brook?"
    assert _answer_nll(ev, "v2", kept, "Fenwick") < _answer_nll(ev, None, kept, "Fenwick") - 2.0
