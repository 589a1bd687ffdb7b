"""A real `kinject serve` (API + materialisers + ingest worker) in a thread of the test
process, for the tests that drive kinject over HTTP.

Importable from any test module as ``from _serve import start_serve, wait_ready``.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from _wait import until
from kinject.config import Settings


def start_serve(settings: Settings, workers: int = 1, port: int = 0
                ) -> tuple[str, threading.Event, threading.Thread]:
    """`kinject serve`'s run_serve in a thread (on ``port``; 0: a free one); returns its URL
    once it listens, the event that stops it and the thread (join it after setting the
    event)."""
    from kinject.serve import run_serve

    stop = threading.Event()
    ready: dict[str, Any] = {}
    got = threading.Event()

    def run() -> None:
        try:
            run_serve(settings, "127.0.0.1", port, workers, stop=stop,
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
    """/readyz's body once it answers 200."""
    last: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        r = httpx.get(f"{url}/readyz", timeout=10)
        last["body"] = body = r.json()
        return body if r.status_code == 200 else None

    return until(ready, timeout_s, f"{url} to be ready", every_s=0.2,
                 why=lambda: f"/readyz says {last.get('body')}")
