"""A replica's index meets a new cluster: a restarted embedded broker is routine (INFO), any
other change of cluster is a WARNING. Both re-read kinject.chunks from the start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kinject.config import KafkaSettings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.stream.materialiser import IndexMaterialiser
from kinject.stream.topics import Topics

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(("before", "level"), [
    ("kinject-embedded-0123456789ab", logging.INFO),  # `kinject serve` restarted
    ("prod-kafka-cluster", logging.WARNING),  # the index came from another cluster's log
])
def test_a_new_cluster_is_logged_by_what_it_means(
    kafka: KafkaSettings, hash_embedder: HashEmbedder, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, before: str, level: int
) -> None:
    topic = Topics.from_settings(kafka).chunks
    with TextIndex(tmp_path / "index", hash_embedder) as index:
        index.reset_source(before, topic)  # the cluster its offsets belonged to
        mat = IndexMaterialiser(kafka, kafka.bootstrap_servers or "", index)
        with caplog.at_level(logging.INFO, logger="kinject.stream.materialiser"):
            mat.start()
        mat.close()
        assert index.source_cluster() not in (None, before)
    said = [r for r in caplog.records if "re-reading" in r.getMessage()]
    assert [r.levelno for r in said] == [level], [r.getMessage() for r in said]
