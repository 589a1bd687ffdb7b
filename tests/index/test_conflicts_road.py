"""Two CSV sources disagree on a city's population, through the real broker: search and ask
return the newer value, and `kinject conflicts` lists both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _running import Running
from _wait import until
from kinject.cli import app
from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.ingest.pipeline import IngestConfig
from kinject.models import load_generator
from kinject.rag.reader import Ct2Reader
from kinject.rag.reader_model import load_reader
from kinject.rag.service import RagService
from kinject.stream.ingest_worker import IngestWorker
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.producer import Producer
from kinject.stream.topics import ensure_topics
from kinject.types import Record

pytestmark = pytest.mark.kafka

OLD = b"city,population,founded\nGullspire,41000,1620\nTessel,900,1702\n"
NEW = b"City,Population,Founded\nGullspire,43500,1620\nTessel,900,1702\n"


def test_the_newer_csv_wins_search_and_ask_and_the_conflict_is_listed(
    kafka_bootstrap: str, data_dir: Path, hash_embedder: HashEmbedder, tiny_lm_dir: Path,
    reader_cache: Path, request: pytest.FixtureRequest,
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=2,
                          topic_prefix="c" + str(abs(hash(request.node.nodeid)) % 10**8),
                          session_timeout_ms=2000)
    ensure_topics(kafka, kafka_bootstrap)
    index = TextIndex(data_dir / "index", hash_embedder).open()
    worker = IngestWorker(kafka, kafka_bootstrap, IngestConfig(ocr_engine="none"),
                          hash_embedder)
    mat = IndexMaterialiser(kafka, kafka_bootstrap, index)
    loops = Running(worker.run, mat.run)
    try:
        until(worker.ready.is_set)
        with Producer(kafka, kafka_bootstrap) as producer:  # stamps each record's ts
            producer.publish(Record("census/2020.csv", kind="csv", content=OLD))
            time.sleep(0.01)
            producer.publish(Record("census/2023.csv", kind="csv", content=NEW))

        def texts() -> list[str]:
            return [h.text for h in index.search("Gullspire population", 10)]

        until(lambda: any("43500" in t for t in texts()))
        assert not any("41000" in t for t in texts())
        assert index.docstore is not None and index.docstore.count() == 4  # both kept

        generator = load_generator(str(tiny_lm_dir), data_dir / "models", "cpu", "auto")
        reader = Ct2Reader(load_reader("qwen2.5-0.5b", reader_cache, "cpu"))
        answer = RagService(index, generator, reader=lambda: reader).ask(
            "What is the population of Gullspire?")
        assert not answer.abstained and answer.citations
        assert {c.source_id for c in answer.citations} == {"census/2023.csv"}
        assert "43500" in answer.text and "41000" not in answer.text
    finally:
        loops.stop()
        index.close()

    result = CliRunner().invoke(app, ["conflicts", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert (line["entity"], line["field"]) == ("Gullspire", "Population")
    assert [(v["value"], v["source_id"]) for v in line["values"]] == [
        ("43500", "census/2023.csv"), ("41000", "census/2020.csv")]
    assert line["values"][0]["ts"] > line["values"][1]["ts"]
    table = CliRunner().invoke(app, ["conflicts", "--entity", "tessel",
                                     "--data-dir", str(data_dir)])
    assert table.exit_code == 0 and "0 conflict(s)" in table.output
