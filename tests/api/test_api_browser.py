"""The web page in a real browser (Debian's headless Chromium through selenium): search, ask
with a streamed answer, click a citation, and a screenshot that is not blank."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _api_helpers import Served, make_settings, publish, serving
from PIL import Image

from _wait import until

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

FACT = "The Saltmarsh observatory on Kellan Point counts forty-two comets each winter."


def test_page_searches_asks_and_shows_the_cited_passage(served: Served, browser, tmp_path: Path
                                                        ) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    publish(served, {"source_id": "web/saltmarsh", "content": FACT})
    with served.client() as c:
        until(lambda: c.get("/v1/search", params={"q": "Saltmarsh comets"}).json()["hits"],
              what="the fact in the index")
    wait = WebDriverWait(browser, 60)
    browser.get(served.url + "/")
    wait.until(lambda d: d.find_element(By.ID, "stat-chunks").text not in ("", "-"))
    assert int(browser.find_element(By.ID, "stat-chunks").text) >= 1
    assert browser.find_element(By.ID, "stat-adapter").text == "base model"
    wait.until(lambda d: "web/saltmarsh" in d.find_element(By.ID, "recent").text)
    # the shared server keeps no corpus (tests/api/conftest.py): nothing has taken the chunk
    # events in, and the page says how many wait
    with served.client() as c:
        status = c.get("/v1/status").json()
    assert status["corpus"] is None and sum(status["corpus_lag"].values()) >= 1
    lag = f"{sum(status['corpus_lag'].values())} events"
    wait.until(lambda d: d.find_element(By.ID, "stat-corpus-lag").text == lag)
    assert browser.find_element(By.ID, "stat-corpus").text == "empty"

    browser.find_element(By.ID, "search-q").send_keys("Saltmarsh observatory comets")
    browser.find_element(By.ID, "search-go").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results li.hit"))
    first = browser.find_elements(By.CSS_SELECTOR, "#search-results li.hit")[0].text
    assert "forty-two comets" in first and "web/saltmarsh" in first

    browser.find_element(By.ID, "ask-q").send_keys(
        "How many comets does the Saltmarsh observatory count?")
    browser.find_element(By.ID, "ask-go").click()
    cite = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#answer a.cite")))
    assert cite.text == "[1]"
    assert "forty-two" in browser.find_element(By.ID, "answer").text
    cite.click()
    shown = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".passage.shown")))
    assert "comets" in shown.text and "web/saltmarsh" in shown.text

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 800
    assert pixels.std() > 20, "the screenshot is blank"
    # Dark header, light body: both present means the page was laid out and painted.
    assert (pixels < 80).mean() > 0.02 and (pixels > 200).mean() > 0.4
    keep = os.environ.get("KINJECT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_a_passage_of_several_lines_shows_them_as_lines(served: Served, browser
                                                       ) -> None:  # type: ignore[no-untyped-def]
    """Table rows, list items and code keep their line breaks in a hit (they were run
    together into one paragraph; a cited passage has the same class); and the answer box
    shows only once there is an answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = ("Brinmoor ferry timetable:\nThe first ferry to Gullspire leaves at 06:40.\n"
            "The last ferry to Gullspire leaves at 22:15.")
    publish(served, {"source_id": "web/timetable", "content": text})
    with served.client() as c:
        until(lambda: c.get("/v1/search", params={"q": "Brinmoor ferry timetable"}).json()
              ["hits"], what="the timetable in the index")
    wait = WebDriverWait(browser, 60)
    browser.get(served.url + "/")
    assert not browser.find_element(By.ID, "answer").is_displayed()  # nothing asked yet
    browser.find_element(By.ID, "search-q").send_keys("Brinmoor ferry timetable Gullspire")
    browser.find_element(By.ID, "search-go").click()
    wait.until(lambda d: "web/timetable" in d.find_element(By.ID, "search-results").text)
    hit = next(h for h in browser.find_elements(By.CSS_SELECTOR, "#search-results li.hit")
               if "web/timetable" in h.text)
    lines = hit.find_element(By.CSS_SELECTOR, ".text").text.split("\n")
    assert lines[:2] == ["Brinmoor ferry timetable:",
                         "The first ferry to Gullspire leaves at 06:40."], lines
    # hybrid hits are ranked by the fused score: each number shown is named for what it is
    # (it read "cosine -0.009" on a hit that only BM25 had found)
    label = hit.find_element(By.CSS_SELECTOR, ".src").text
    assert re.fullmatch(r"web/timetable · fused -?\d+\.\d{3} · cosine -?\d+\.\d{3} · "
                        r"bm25 \d+\.\d{3}", label), label


def test_an_image_hit_says_why_it_shows_no_thumbnail(served: Served, browser
                                                    ) -> None:  # type: ignore[no-untyped-def]
    """The shared server has no CLIP image index, which keeps the thumbnails: an image's
    caption hit says so on the page, instead of showing only the caption, and the page asks
    for no thumbnail (each request was a 404 in the browser's console)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = io.BytesIO()
    Image.new("RGB", (160, 120), (200, 40, 40)).save(picture, format="PNG")
    caption = "The red boat Puffin Dawn moored in Veyholm harbour"
    publish(served, {"source_id": "web/puffin.png", "kind": "image", "meta": {"caption": caption},
                     "content_b64": base64.b64encode(picture.getvalue()).decode()})
    with served.client() as c:
        until(lambda: any(h["source_id"] == "web/puffin.png" for h in c.get(
            "/v1/search", params={"q": "Puffin Dawn Veyholm harbour"}).json()["hits"]),
              what="the caption in the index")
        assert c.get("/v1/status").json()["thumbnails"] is False
    browser.get(served.url + "/")
    browser.get_log("browser")  # what earlier tests left in the console
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "stat-chunks").text not in ("", "-"))
    browser.find_element(By.ID, "search-q").send_keys("Puffin Dawn Veyholm harbour")
    browser.find_element(By.ID, "search-go").click()
    note = WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#search-results li.hit .thumb .note"))
    assert note.text == "image (160×120): no thumbnail (no CLIP image index here)", note.text
    assert "KINJECT_MODELS__CLIP_CHECKPOINT" in (note.get_attribute("title") or "")
    assert not browser.find_elements(By.CSS_SELECTOR, "#search-results .thumb img")
    failed = [e["message"] for e in browser.get_log("browser") if "/thumbnail" in e["message"]]
    assert not failed, failed


@pytest.fixture(scope="module")
def clip_served(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
                tiny_lm_dir: Path, tiny_clip: dict[str, str]) -> Iterator[Served]:
    """A server with a CLIP image index (a tiny CLIP: the thumbnails are what matters)."""
    from kinject.api.auth import KEYS_FILE, KeyStore

    data_dir = tmp_path_factory.mktemp("api-clip-data")
    settings = make_settings(data_dir, kafka_bootstrap, tiny_lm_dir, models=tiny_clip,
                             finetune={"materialise_corpus": False})
    keys = {"write": KeyStore(data_dir / KEYS_FILE).create("test-write", "write")[1]}
    with serving(settings, keys) as served:
        yield served


def test_with_clip_an_answer_shows_the_thumbnail_of_the_image_it_cites(
    clip_served: Served, browser
) -> None:  # type: ignore[no-untyped-def]
    """The answer's images (ids in /v1/ask's ``images``) were never shown on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = io.BytesIO()
    Image.new("RGB", (160, 120), (30, 160, 60)).save(picture, format="PNG")
    caption = "The green lifeboat Marram Star is kept in the Tolvik boathouse"
    publish(clip_served, {"source_id": "web/marram.png", "kind": "image",
                          "meta": {"caption": caption},
                          "content_b64": base64.b64encode(picture.getvalue()).decode()})
    question = "What colour is the lifeboat Marram Star?"
    with clip_served.client() as c:
        until(lambda: c.get("/v1/status").json()["index_chunks"] >= 1, what="the caption")
        assert c.get("/v1/status").json()["thumbnails"] is True
        images = c.post("/v1/ask", json={"question": question}).json()["images"]
        assert images and c.get(f"/v1/images/{images[0]}/thumbnail").status_code == 200
    browser.get(clip_served.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "stat-chunks").text not in ("", "-"))
    browser.find_element(By.ID, "ask-q").send_keys(question)
    browser.find_element(By.ID, "ask-go").click()
    img = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#citations .answer-images img"))
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", img) > 0)
    assert "green" in browser.find_element(By.ID, "answer").text.lower()


def test_code_in_a_hit_shows_indented(served: Served, browser
                                      ) -> None:  # type: ignore[no-untyped-def]
    """A Python example read flat on the page ("... def default(self, obj):" at the margin)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = ("Quenwick encoder example:\n\n```python\nclass QuenwickEncoder:\n"
            "    def default(self, obj):\n        return obj.real\n```\n")
    publish(served, {"source_id": "web/quenwick.md", "kind": "markdown", "content": text})
    with served.client() as c:
        until(lambda: any(h["source_id"] == "web/quenwick.md" for h in c.get(
            "/v1/search", params={"q": "Quenwick encoder example"}).json()["hits"]),
              what="the example in the index")
    browser.get(served.url + "/")
    browser.find_element(By.ID, "search-q").send_keys("Quenwick encoder example")
    browser.find_element(By.ID, "search-go").click()
    WebDriverWait(browser, 60).until(
        lambda d: "web/quenwick.md" in d.find_element(By.ID, "search-results").text)
    hit = next(h for h in browser.find_elements(By.CSS_SELECTOR, "#search-results li.hit")
               if "web/quenwick.md" in h.text)
    lines = hit.find_element(By.CSS_SELECTOR, ".text").text.split("\n")
    assert "    def default(self, obj):" in lines, lines
    assert "        return obj.real" in lines, lines
