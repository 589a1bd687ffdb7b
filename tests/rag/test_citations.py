"""Where in its source a citation points: the time span of speech in a recording, the page of
a PDF, nothing for other kinds; taken from the cited chunk's meta as ingest wrote it."""

from pathlib import Path
from typing import Any

import pytest

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.models import load_generator
from kinject.rag.service import RagConfig, RagService
from kinject.types import Chunk, Citation, Hit, content_hash

# What ingest/audio.py and ingest/pdf.py put in a chunk's meta.
SPEECH = {"unit": "speech", "duration_s": 75.0, "language": "en",
          "language_probability": 0.98, "start_s": 41.3, "end_s": 46.2}
PDF_PAGE = {"unit": "page", "page": 3, "pages": 9, "pdf_title": "Annual report", "ocr": False}


def _hit(source_id: str, meta: dict[str, Any]) -> Hit:
    return Hit(chunk_id="c1", source_id=source_id, text="what was said", score=0.5, meta=meta)


def test_a_speech_chunk_is_cited_with_its_time_in_the_recording() -> None:
    c = Citation.of(2, _hit("meetings/talk.mp3", SPEECH))
    assert (c.n, c.start_s, c.end_s, c.page) == (2, 41.3, 46.2, None)
    assert (c.source_id, c.chunk_id, c.snippet, c.score) == (
        "meetings/talk.mp3", "c1", "what was said", 0.5)
    # whole seconds, widened so the span shown still covers what was said
    assert c.label == "meetings/talk.mp3 at 0:41-0:47"
    long = Citation.of(1, _hit("radio.ogg", {**SPEECH, "start_s": 3725.0, "end_s": 3731.5}))
    assert long.label == "radio.ogg at 1:02:05-1:02:12"


def test_a_pdf_chunk_is_cited_with_its_page() -> None:
    c = Citation.of(1, _hit("docs/report.pdf", PDF_PAGE))
    assert (c.page, c.start_s, c.end_s) == (3, None, None)
    assert c.label == "docs/report.pdf, page 3"


@pytest.mark.parametrize("meta", [
    {},
    {"title": "Notes", "unit": "row", "row": {"a": "1"}},
    # a user's own record meta is not where ingest placed the chunk
    {"page": 4, "start_s": 1.0, "end_s": 2.0},
    {"unit": "speech", "start_s": 5.0},  # half a span
    {"unit": "speech", "start_s": 9.0, "end_s": 2.0},
    {"unit": "page", "page": "4"},
])
def test_other_chunks_are_cited_without_a_place(meta: dict[str, Any]) -> None:
    c = Citation.of(1, _hit("kb/notes.md", meta))
    assert (c.start_s, c.end_s, c.page) == (None, None, None)
    assert c.label == "kb/notes.md"


def test_a_citation_refuses_a_place_that_cannot_be() -> None:
    with pytest.raises(ValueError, match="together"):
        Citation(1, "s", "c", 0.1, "x", start_s=1.0)
    with pytest.raises(ValueError, match="start_s <= end_s"):
        Citation(1, "s", "c", 0.1, "x", start_s=3.0, end_s=1.0)
    with pytest.raises(ValueError, match="page"):
        Citation(1, "s", "c", 0.1, "x", page=0)


def test_answers_cite_a_recording_with_its_time_and_text_without_one(
        tmp_path: Path, hash_embedder: HashEmbedder, tiny_lm_dir: Path) -> None:
    talk = "The harbour ferry will stop running on Sundays during the winter."
    note = "The guild was founded in 1847 by Ada Quill."
    with TextIndex(tmp_path / "i", hash_embedder) as index:
        for sid, text, kind, meta in [("meetings/talk.mp3", talk, "audio", SPEECH),
                                      ("kb/guild", note, "text", {})]:
            chunk = Chunk(chunk_id=content_hash(sid, text), doc_id=sid, source_id=sid,
                          text=text, kind=kind, meta=meta)
            index.apply([SourceUpdate(op="upsert", source_id=sid, chunks=(chunk,),
                                      vectors=hash_embedder.encode([text]),
                                      embedder=hash_embedder.name)])
        generator = load_generator(str(tiny_lm_dir), tmp_path / "models", "cpu", "auto")
        # free mode: the tiny random generator's words are not grounded, so the answer is the
        # best passage itself with its citation (test_rag_service.py)
        rag = RagService(index, generator, RagConfig(mode="free", cache_size=0))
        ferry = rag.ask("when does the harbour ferry stop running")
        assert [(c.source_id, c.start_s, c.end_s) for c in ferry.citations] == [
            ("meetings/talk.mp3", 41.3, 46.2)]
        guild = rag.ask("who founded the guild")
        assert [(c.source_id, c.start_s, c.end_s, c.page) for c in guild.citations] == [
            ("kb/guild", None, None, None)]
