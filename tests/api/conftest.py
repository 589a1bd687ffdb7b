"""One real `kinject serve` (API + materialiser + ingest worker) on the shared broker, shared
by the API tests (start-up costs seconds)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _api_helpers import Served, make_settings, serving

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
    with serving(settings, keys) as served:
        yield served


@pytest.fixture()
def browser():  # type: ignore[no-untyped-def]
    """Debian's headless Chromium through selenium, for the web page's tests."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver); .ci/run installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def peer_served(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
                tiny_lm_dir: Path) -> Iterator[Served]:
    """A `kinject serve` of its own for the peer suites (the official openai client and
    LangChain's standard chat tests): the tiny generator writes (rag mode ``free``), so
    sampling options reach a model, and no key is needed for reads (keys exist for writes)."""
    data_dir = tmp_path_factory.mktemp("peer-data")
    settings = make_settings(data_dir, kafka_bootstrap, tiny_lm_dir,
                             finetune={"materialise_corpus": False})
    settings = settings.model_copy(update={"rag": settings.rag.model_copy(
        update={"mode": "free"})})
    store = KeyStore(data_dir / KEYS_FILE)
    keys = {role: store.create(f"peer-{role}", role)[1] for role in ("read", "write")}
    with serving(settings, keys) as served:
        yield served
