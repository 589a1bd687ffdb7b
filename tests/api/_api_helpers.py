"""Helpers for the API tests: a real `kinject serve` (API + materialiser + ingest worker)."""

from __future__ import annotations

import threading
import time
import uuid
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


def make_settings(data_dir: Path, bootstrap: str, generator: Path,
                  finetune: dict[str, Any] | None = None, **api: Any) -> Settings:
    more: dict[str, Any] = {"finetune": finetune} if finetune else {}
    return load_settings(
        data_dir=data_dir,
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": f"api-{uuid.uuid4().hex[:8]}",
               "partitions": 1},
        models={"embedder": "hash", "generator": str(generator)},
        api=api, **more,
    )


def start_serve(settings: Settings, workers: int = 1) -> tuple[str, threading.Event,
                                                                threading.Thread]:
    """`kinject serve`'s run_serve in a thread; returns its URL once it listens."""
    from kinject.serve import run_serve

    stop = threading.Event()
    ready: dict[str, Any] = {}
    got = threading.Event()

    def run() -> None:
        try:
            run_serve(settings, "127.0.0.1", 0, workers, stop=stop,
                      on_ready=lambda url: (ready.update(url=url), got.set()))
        except BaseException as exc:
            ready["error"] = exc
            got.set()

    thread = threading.Thread(target=run, name="test-serve", daemon=True)
    thread.start()
    got.wait(120)
    if "url" not in ready:
        stop.set()
        raise RuntimeError(f"kinject serve did not start: {ready.get('error')}")
    return ready["url"], stop, thread


def wait_ready(url: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/readyz", timeout=10)
        body = r.json()
        if r.status_code == 200:
            return body
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout_s} s: {body}")



def publish(served: Served, *records: dict[str, Any]) -> dict[str, Any]:
    with served.client("write") as c:
        r = c.post("/v1/records", json={"records": list(records)})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body

