"""Answers list images: those of the passages they cite and, with the CLIP image index on,
those CLIP finds for the question (rag.max_images, rag.image_min_score)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _image_helpers import ingest, png

from kinject.config import Settings, load_settings
from kinject.service import KinjectService
from kinject.types import Answer, Record

QUESTION = "When does the ferry timetable change?"


RECORDS = [
    Record(source_id="pics/ferry", kind="image", content=png(1),
           meta={"caption": "The red ferry Osprey leaving Greyhaven pier"}),
    Record(source_id="pics/mill", kind="image", content=png(2),
           meta={"caption": "Windmill on the Tarrow dunes at sunset"}),
    # no caption, no OCR: no text reaches the index, only CLIP can find it
    Record(source_id="pics/harbour", kind="image", content=png(3)),
    Record(source_id="notes/ferry", kind="text",
           content=b"The ferry timetable changes in October."),
]


def _settings(data_dir: Path, lm: Path, clip: dict[str, str] | None = None,
              **rag: Any) -> Settings:
    return load_settings(
        data_dir=data_dir,
        models={"embedder": "hash:64", "embedder_zh": "none", "generator": str(lm),
                "device": "cpu", **(clip or {})},
        # free answers from the tiny random model fall back to quoting the best passage:
        # meaning does not matter here, which passage is cited (and its images) does
        rag={"mode": "free", "cache_size": 0, **rag})


def _cited_images(answer: Answer, image_of: dict[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(image_of[c.source_id] for c in answer.citations
                               if c.source_id in image_of))


@pytest.fixture()
def indexed(tmp_path: Path, tiny_lm_dir: Path, tiny_clip: dict[str, str]) -> dict[str, str]:
    """A data directory whose text and CLIP image indexes hold RECORDS."""
    with KinjectService(_settings(tmp_path / "data", tiny_lm_dir, tiny_clip)) as svc:
        return ingest(svc, RECORDS)


def test_an_answer_lists_the_images_clip_finds_after_the_cited_ones(
        tmp_path: Path, tiny_lm_dir: Path, tiny_clip: dict[str, str],
        indexed: dict[str, str]) -> None:
    settings = _settings(tmp_path / "data", tiny_lm_dir, tiny_clip, image_min_score=-1.0,
                         max_images=len(indexed))
    with KinjectService(settings) as svc:
        answer = svc.ask(QUESTION)
        assert not answer.abstained and answer.citations
        cited = _cited_images(answer, indexed)
        by_clip = [h.image_id for h in svc.search_images(query_text=QUESTION,
                                                         k=len(indexed))]
        # the cited images first, then every other image in CLIP's order, each once
        assert answer.images == cited + tuple(i for i in by_clip if i not in cited)
        assert indexed["pics/harbour"] in answer.images  # reachable through CLIP only
        assert "images_s" in answer.timings
        # the streamed answer ends with the same images
        final = list(svc.ask_stream(QUESTION))[-1]
        assert isinstance(final, Answer) and final.images == answer.images


def test_image_min_score_and_max_images_decide_which_clip_images_are_added(
        tmp_path: Path, tiny_lm_dir: Path, tiny_clip: dict[str, str],
        indexed: dict[str, str]) -> None:
    data = tmp_path / "data"
    with KinjectService(_settings(data, tiny_lm_dir, tiny_clip)) as svc:
        hits = svc.search_images(query_text=QUESTION, k=len(indexed))
        cited = _cited_images(svc.ask(QUESTION), indexed)
    scores = sorted((h.score for h in hits), reverse=True)
    assert scores[0] > scores[1]
    # a threshold between the best and the second best CLIP score: only the best is added
    between = (scores[0] + scores[1]) / 2
    with KinjectService(_settings(data, tiny_lm_dir, tiny_clip,
                                  image_min_score=between)) as svc:
        answer = svc.ask(QUESTION)
    best = hits[0].image_id
    assert answer.images == cited + (() if best in cited else (best,))
    # a threshold above every score: only the cited images
    above = min(scores[0] + 0.01, 1.0)
    with KinjectService(_settings(data, tiny_lm_dir, tiny_clip,
                                  image_min_score=above)) as svc:
        assert svc.ask(QUESTION).images == cited
    # everything passes, but at most max_images come from CLIP; max_images=0 turns it off
    for limit in (1, 0):
        with KinjectService(_settings(data, tiny_lm_dir, tiny_clip, image_min_score=-1.0,
                                      max_images=limit)) as svc:
            answer = svc.ask(QUESTION)
        assert answer.images[:len(cited)] == cited
        assert len(answer.images) == len(cited) + limit


def test_abstentions_closed_book_answers_and_filtered_asks_get_no_stray_images(
        tmp_path: Path, tiny_lm_dir: Path, tiny_clip: dict[str, str],
        indexed: dict[str, str]) -> None:
    settings = _settings(tmp_path / "data", tiny_lm_dir, tiny_clip, image_min_score=-1.0)
    with KinjectService(settings) as svc:
        assert svc.search_images(query_text="quasar zeppelin", k=1)  # CLIP would find some
        answer = svc.ask("quasar zeppelin xylophone")
        assert answer.abstained and answer.images == ()
        final = list(svc.ask_stream("quasar zeppelin xylophone"))[-1]
        assert isinstance(final, Answer) and final.abstained and final.images == ()
        closed = svc.ask(QUESTION, route="adapter")
        assert closed.route == "adapter" and closed.images == ()
        # an ask limited to notes/ gets no image of pics/ from CLIP
        limited = svc.ask(QUESTION, filters=["source=notes/"])
        assert not limited.abstained and limited.images == ()
        # kind=image lets CLIP's images through (they are of kind image)
        as_images = svc.ask("Osprey ferry Greyhaven pier", filters=["kind=image"])
        assert indexed["pics/harbour"] in as_images.images


def test_without_clip_images_come_only_from_cited_passages(
        tmp_path: Path, tiny_lm_dir: Path) -> None:
    with KinjectService(_settings(tmp_path / "plain", tiny_lm_dir, image_min_score=-1.0)
                        ) as svc:
        assert svc.images is None
        image_of = ingest(svc, RECORDS)
        answer = svc.ask("Which ferry is leaving Greyhaven pier?")
        assert not answer.abstained
        assert answer.images == _cited_images(answer, image_of)
        assert image_of["pics/ferry"] in answer.images
        assert image_of["pics/harbour"] not in answer.images
        text_only = svc.ask(QUESTION, filters=["source=notes/"])
        assert not text_only.abstained and text_only.images == ()


def test_the_api_answers_with_clip_images_and_chat_completions_are_unchanged(
        tmp_path: Path, tiny_lm_dir: Path, tiny_clip: dict[str, str],
        indexed: dict[str, str]) -> None:
    from fastapi.testclient import TestClient

    from kinject.api.app import create_app

    settings = _settings(tmp_path / "data", tiny_lm_dir, tiny_clip, image_min_score=-1.0)
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        r = client.post("/v1/ask", json={"question": QUESTION})
        assert r.status_code == 200, r.text
        assert indexed["pics/harbour"] in r.json()["images"]
        chat = client.post("/v1/chat/completions",
                           json={"model": "kinject",
                                 "messages": [{"role": "user", "content": QUESTION}]})
        assert chat.status_code == 200, chat.text
        body = chat.json()
        assert set(body) == {"id", "object", "created", "model", "choices", "usage",
                             "citations"}
        assert body["choices"][0]["message"]["content"]
        # the tiny random model's words are not grounded: it quotes a retrieved passage
        searched = client.get("/v1/search", params={"q": QUESTION, "k": 4}).json()["hits"]
        assert body["citations"][0]["source_id"] in {h["source_id"] for h in searched}
