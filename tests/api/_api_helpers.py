"""Helpers for the API tests: settings for a real `kinject serve` (started by tests/_serve.py)
and the shared server's handle."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kinject.config import Settings, load_settings


@dataclass
class Served:
    url: str
    settings: Settings
    keys: dict[str, str]  # role -> key
    stop: threading.Event

    def client(self, role: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)


@contextmanager
def serving(settings: Settings, keys: dict[str, str]) -> Iterator[Served]:
    """A real `kinject serve` on ``settings``, ready when the block starts, stopped at its end."""
    from _serve import start_serve, wait_ready

    url, stop, thread = start_serve(settings)
    try:
        wait_ready(url)
        yield Served(url=url, settings=settings, keys=keys, stop=stop)
    finally:
        stop.set()
        thread.join(60)


def make_settings(data_dir: Path, bootstrap: str, generator: Path,
                  finetune: dict[str, Any] | None = None,
                  models: dict[str, str] | None = None, **api: Any) -> Settings:
    more: dict[str, Any] = {"finetune": finetune} if finetune else {}
    return load_settings(
        data_dir=data_dir,
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": f"api-{uuid.uuid4().hex[:8]}",
               "partitions": 1},
        models={"embedder": "hash", "generator": str(generator), **(models or {})},
        api=api, **more,
    )


def publish(served: Served, *records: dict[str, Any]) -> dict[str, Any]:
    with served.client("write") as c:
        r = c.post("/v1/records", json={"records": list(records)})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body

