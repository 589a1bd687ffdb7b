"""One real `kinject serve` (API + materialiser + ingest worker) on the shared broker, shared
by the API tests (start-up costs seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _api_helpers import Served, make_settings, start_serve, wait_ready

from kinject.api.auth import KEYS_FILE, KeyStore


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
           tiny_lm_dir: Path) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("api-data")
    # No corpus materialiser: schemathesis posts /v1/finetune/jobs with an admin key, and with
    # a corpus filled by what other tests publish each job would really train the model in
    # the background, past the end of the session (the interpreter then aborts on exit). An
    # empty corpus makes every such job a quick "skipped"; the training road has its own
    # server (tests/finetune/test_injection_road.py).
    settings = make_settings(data_dir, kafka_bootstrap, tiny_lm_dir,
                             finetune={"materialise_corpus": False})
    store = KeyStore(data_dir / KEYS_FILE)
    keys = {role: store.create(f"test-{role}", role)[1] for role in ("read", "write", "admin")}
    url, stop, thread = start_serve(settings)
    try:
        wait_ready(url)
        yield Served(url=url, settings=settings, keys=keys, stop=stop)
    finally:
        stop.set()
        thread.join(60)
