"""Two `kinject serve` processes with data dirs of their own on one broker, for the tests of
what travels between hosts (fetch by event, a delete's taint on a replica). A publishes its
adapter versions at ``finetune.publish_url``; each test says what else A and B are.

Importable from the tests in this folder as ``from _hosts import serve_two_hosts``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from _serve import start_serve, wait_ready
from kinject.config import Settings, load_settings
from kinject.finetune.registry import AdapterRegistry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def host_config(path: Path, data_dir: Path, bootstrap: str, prefix: str, generator: Path,
                key: str, finetune: str) -> Settings:
    """A host's whole configuration as a TOML file: the hash embedder, the tiny generator,
    no OCR, one admin key, and the ``[finetune]`` lines given."""
    path.write_text(f"""
data_dir = "{data_dir}"
[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{prefix}"
partitions = 1
[models]
embedder = "hash"
embedder_zh = "none"
generator = "{generator}"
device = "cpu"
[ingest]
ocr_engine = "none"
[rag]
mode = "free"
[api]
api_key = "{key}"
[finetune]
{finetune}
""", encoding="utf-8")
    return load_settings(path)


@contextmanager
def serve_two_hosts(tmp_path: Path, bootstrap: str, generator: Path,
                    monkeypatch: pytest.MonkeyPatch, *, name: str, keys: tuple[str, str],
                    finetune: tuple[str, str], workers_a: int = 0) -> Iterator[dict[str, Any]]:
    """A and B serving (B with no ingest worker); ``keys``: each one's admin key;
    ``finetune``: each one's ``[finetune]`` lines, A's after its ``publish_url``.
    Yields their URLs (``a``, ``b``), registries (``reg_a``, ``reg_b``), A's Kafka
    settings (``kafka``), the ``bootstrap`` servers and A's data dir (``data_a``)."""
    for var in [v for v in os.environ if v.startswith("KINJECT_")]:
        monkeypatch.delenv(var)  # the TOML files are the whole configuration
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    a = host_config(tmp_path / "a.toml", tmp_path / "a", bootstrap, prefix, generator, keys[0],
                    f'publish_url = "http://127.0.0.1:{port}"\n{finetune[0]}')
    b = host_config(tmp_path / "b.toml", tmp_path / "b", bootstrap, prefix, generator, keys[1],
                    finetune[1])
    url_a, stop_a, thread_a = start_serve(a, workers=workers_a, port=port)
    try:
        url_b, stop_b, thread_b = start_serve(b, workers=0)
        try:
            wait_ready(url_a, 90)
            wait_ready(url_b, 90)
            yield {"a": url_a, "b": url_b, "reg_a": AdapterRegistry.for_data_dir(a.data_dir),
                   "reg_b": AdapterRegistry.for_data_dir(b.data_dir), "kafka": a.kafka,
                   "bootstrap": bootstrap, "data_a": a.data_dir}
        finally:
            stop_b.set()
            thread_b.join(60)
    finally:
        stop_a.set()
        thread_a.join(60)
