"""stop / max_tokens on a streamed answer and the standalone question of a conversation,
without a server (the live behaviour: test_openai_peer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kinject.api.errors import ApiError
from kinject.api.openai_compat import (
    Cut,
    conversation,
    sampling_of,
    standalone_question,
    stops_of,
)


@pytest.fixture(scope="module")
def tok(tiny_lm_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def _stream(cut: Cut, pieces: list[str]) -> list[str]:
    full, shown = "", []
    for piece in pieces:
        full += piece
        shown.append(cut.update(full))
    shown.append(cut.update(full, final=True))
    return shown


def test_a_stop_string_split_over_pieces_is_never_shown(tok: Any) -> None:
    cut = Cut(tok, stops_of(["Pellick"]), None)
    shown = _stream(cut, ["The ferry leaves Pel", "li", "ck harbour at seven."])
    assert shown[-1] == "The ferry leaves " and cut.reason == "stop"
    # each step shows a prefix of the next: nothing shown is taken back
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:], strict=False))
    assert all("Pel" not in s for s in shown)


def test_a_tail_that_is_not_a_stop_after_all_is_shown_at_the_end(tok: Any) -> None:
    cut = Cut(tok, ["Pellick"], None)
    assert _stream(cut, ["It leaves Pel"])[-1] == "It leaves Pel" and cut.reason is None


def test_max_tokens_counts_tokens_of_the_tokenizer(tok: Any) -> None:
    text = "The Marrow Institute was founded in 1987."
    ids = tok.encode(text, add_special_tokens=False)
    cut = Cut(tok, [], 5)
    shown = _stream(cut, [text[:10], text[10:25], text[25:]])
    assert shown[-1] == tok.decode(ids[:5]) and cut.reason == "length"
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:], strict=False))
    short = Cut(tok, [], len(ids))
    assert short.update(text, final=True) == text and short.reason is None


def test_options_out_of_range_are_400s() -> None:
    for call in (lambda: stops_of(["a", "b", "c", "d", "e"]), lambda: stops_of([""]),
                 lambda: sampling_of(2.5, None, None), lambda: sampling_of(1.0, 0.0, None)):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 400
    assert sampling_of(0, 0.5, 3) is None  # temperature 0: greedy
    assert sampling_of(0.7, None, 3) is not None


def test_the_question_is_the_last_user_turn_and_the_earlier_ones_its_context() -> None:
    turns = [("system", "Be brief."), ("user", "Tell me about the Orvane ferry."),
             ("assistant", "It leaves Pellick [1]."), ("user", "At what time?")]
    assert conversation(turns, 2000) == ("At what time?", ("Tell me about the Orvane ferry.",))
    assert standalone_question(turns, 2000) == "Tell me about the Orvane ferry.\nAt what time?"
    assert conversation([("user", "Hello")], 2000) == ("Hello", ())
    # the oldest turns go first when the limit is near; the question itself always stays
    many = [("user", "one"), ("user", "two"), ("user", "three"), ("user", "four")]
    assert conversation(many, 2000) == ("four", ("two", "three"))
    assert conversation(many, len("three\nfour")) == ("four", ("three",))
    with pytest.raises(ApiError):
        conversation([("system", "hi"), ("assistant", "hello")], 2000)


def test_a_streamed_answer_whose_final_text_is_the_stream_trimmed_is_not_sent_twice(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    """A closed-book answer streams the generator's raw pieces; its final text is the same
    text trimmed. The chunks must add up to it once, not to it twice (the stream, a newline,
    then the final text again)."""
    from kinject.api.routes.chat import AnswerJob, Final, _stream
    from kinject.config import load_settings
    from kinject.service import KinjectService
    from kinject.types import Answer

    settings = load_settings(data_dir=tmp_path, models={"embedder": "hash",
                                                        "generator": str(tiny_lm_dir)})
    job = AnswerJob("Who founded it?", {}, [], None, False,
                    [{"role": "user", "content": "Who founded it?"}])
    final = Answer(text="Ada Quill founded it.", citations=(), route="adapter")
    with KinjectService(settings) as svc:
        items = list(_stream(svc, job, iter([" founded it.\n", final]), " Ada Quill"))
    text = "".join(i for i in items if isinstance(i, str))
    assert text.strip() == "Ada Quill founded it."
    assert isinstance(items[-1], Final) and items[-1].text.strip() == "Ada Quill founded it."
