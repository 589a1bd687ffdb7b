from pathlib import Path
from typing import Any

import pytest

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.models import load_generator
from kinject.rag.sentences import grounding, reading_units, select_sentences, split_sentences
from kinject.rag.service import ABSTAIN_TEXT, RagConfig, RagService
from kinject.types import Chunk, Hit, content_hash


def _add(index: TextIndex, emb: HashEmbedder, source_id: str, text: str,
         kind: str = "text") -> None:
    chunk = Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id,
                  source_id=source_id, text=text, kind=kind)
    index.apply([SourceUpdate(op="upsert", source_id=source_id, chunks=(chunk,),
                              vectors=emb.encode([text]), embedder=emb.name)])


@pytest.fixture()
def tiny_generator(tiny_lm_dir: Path, tmp_path: Path) -> Any:
    return load_generator(str(tiny_lm_dir), tmp_path / "models", "cpu", "auto")


def test_split_sentences_english_and_chinese() -> None:
    assert split_sentences("Ada lives in Osk. She is 41! Why? 因为她喜欢海。她会游泳。") == [
        "Ada lives in Osk.", "She is 41!", "Why?", "因为她喜欢海。", "她会游泳。"]


def test_structured_rows_are_read_whole() -> None:
    row = Hit(chunk_id="c", source_id="s", text="Name: Ada. Town: Osk.", score=1.0,
              meta={"kind": "csv"})
    prose = Hit(chunk_id="d", source_id="t", text="Ada lives in Osk. She swims.", score=1.0,
                meta={"kind": "text"})
    assert reading_units(row) == ["Name: Ada. Town: Osk."]
    assert reading_units(prose) == ["Ada lives in Osk.", "She swims."]


def test_sentence_selection_prefers_the_answer_bearing_sentence(
        hash_embedder: HashEmbedder) -> None:
    hit = Hit(chunk_id="c", source_id="s", score=0.8,
              text="The guild hall is on Tessaly. The guild was founded in 1847 by Ada Quill.")
    chosen = select_sentences("who founded the guild", [hit], hash_embedder, 1)
    assert chosen[0].sentence == "The guild was founded in 1847 by Ada Quill."


def test_grounding_ignores_words_that_only_restate_the_question() -> None:
    q = "Who keeps the Gullspire lighthouse?"
    passage = "Keeper of the Gullspire lighthouse: Senna Calloway."
    assert grounding("Senna Calloway", passage, q) == 1.0
    assert grounding("The Gullspire lighthouse keeper is a person", passage, q) < 0.5
    assert grounding("Gullspire lighthouse", passage, q) == 0.0


def test_abstains_when_nothing_relevant(tmp_path: Path, hash_embedder: HashEmbedder,
                                        tiny_generator: Any) -> None:
    with TextIndex(tmp_path / "i", hash_embedder) as index:
        rag = RagService(index, tiny_generator)
        assert rag.ask("anything at all?").abstained  # empty index
        _add(index, hash_embedder, "kb/otters", "Otters live in the river delta.")
        answer = rag.ask("quarterly tax deadline filing rules")
        assert answer.abstained and answer.text == ABSTAIN_TEXT and not answer.citations


def test_ungrounded_generation_falls_back_to_the_cited_sentence(
        tmp_path: Path, hash_embedder: HashEmbedder, tiny_generator: Any) -> None:
    # The tiny model has random weights: whatever it says is not in the passage, so the
    # service must answer with the passage's best sentence and cite where it came from.
    with TextIndex(tmp_path / "i", hash_embedder) as index:
        _add(index, hash_embedder, "kb/guild",
             "The weather was fine. The guild was founded in 1847 by Ada Quill.")
        _add(index, hash_embedder, "kb/ferry", "The ferry leaves at noon.")
        answer = RagService(index, tiny_generator).ask("who founded the guild")
    assert not answer.abstained
    assert "Ada Quill" in answer.text and answer.text.endswith("[1]")
    assert [c.source_id for c in answer.citations] == ["kb/guild"]
    assert answer.citations[0].snippet in answer.text
    assert answer.timings["total_s"] > 0


def test_bad_input(tmp_path: Path, hash_embedder: HashEmbedder, tiny_generator: Any) -> None:
    with pytest.raises(ValueError, match="k must be"):
        RagConfig(k=0)
    with TextIndex(tmp_path / "i", hash_embedder) as index:
        with pytest.raises(ValueError, match="empty"):
            RagService(index, tiny_generator).ask("   ")
