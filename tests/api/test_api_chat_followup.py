"""Follow-up questions in /v1/chat/completions: the answer is to the last user turn, with the
earlier turns saying what a follow-up that names nothing asks about (the real reader, read
mode, through `kinject serve`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _api_helpers import Served, publish

from _wait import until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MILL = ("The Brannock cider mill stands beside the Wendle weir. It was built in 1894, and "
        "Edda Thorsby has run it since 2011, pressing apples from eleven valley orchards.")
BRIDGE = ("The Halloway rope bridge crosses the Tessen gorge, ninety metres above the river. "
          "It was built in 1931 and carries walkers only; the ranger Cas Dumont checks it "
          "every spring.")
KILN = ("砖窑村的老窑厂建于1958年，厂长是温秀兰。窑厂每年烧制约四万块青砖，"
        "供应周边三个县的古建筑修缮。")


@pytest.fixture(scope="module")
def chat(served: Served) -> Served:
    publish(served, {"source_id": "fu/mill", "content": MILL},
            {"source_id": "fu/bridge", "content": BRIDGE},
            {"source_id": "fu/kiln", "content": KILN})

    def indexed() -> bool:
        with served.client() as c:
            ids = {h["source_id"] for q in ("Brannock cider mill", "Halloway rope bridge",
                                            "砖窑村 老窑厂")
                   for h in c.get("/v1/search", params={"q": q}).json()["hits"]}
        return {"fu/mill", "fu/bridge", "fu/kiln"} <= ids

    until(indexed, what="the follow-up passages in the index")
    return served


def _conversation(*turns: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


def _ask(served: Served, messages: list[dict[str, str]]) -> dict[str, Any]:
    with served.client("read") as c:
        r = c.post("/v1/chat/completions", json={"model": "kinject", "messages": messages})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _answer(body: dict[str, Any]) -> tuple[str, list[str]]:
    text = body["choices"][0]["message"]["content"]
    return text, [c["source_id"] for c in body["citations"]]


def test_a_follow_up_about_another_thing_is_answered_about_that_thing(chat: Served) -> None:
    """The earlier question is not answered again: the last turn asks another fact of another
    entity, and that fact is the answer."""
    body = _ask(chat, _conversation("Who runs the Brannock cider mill?", "Edda Thorsby [1].",
                                    "How high above the river is the Halloway rope bridge?"))
    text, cited = _answer(body)
    assert "ninety metres" in text and cited[:1] == ["fu/bridge"], body
    assert "Thorsby" not in text


def test_a_follow_up_that_names_nothing_is_answered_about_the_earlier_turns_subject(
        chat: Served) -> None:
    """"When was it built?" is about what the conversation was about, and the same words in
    another conversation are about that one's subject (not the first one's cached answer)."""
    mill = _ask(chat, _conversation("Who runs the Brannock cider mill?", "Edda Thorsby [1].",
                                    "When was it built?"))
    text, cited = _answer(mill)
    assert "1894" in text and cited[:1] == ["fu/mill"], mill
    bridge = _ask(chat, _conversation("Who checks the Halloway rope bridge?",
                                      "The ranger Cas Dumont [1].", "When was it built?"))
    text, cited = _answer(bridge)
    assert "1931" in text and cited[:1] == ["fu/bridge"], bridge


def test_a_chinese_follow_up_is_answered_about_the_earlier_turns_subject(chat: Served) -> None:
    body = _ask(chat, _conversation("砖窑村的老窑厂的厂长是谁？", "温秀兰 [1]。",
                                    "它每年烧制多少块青砖？"))
    text, cited = _answer(body)
    assert ("四万" in text or "4万" in text) and cited[:1] == ["fu/kiln"], body


def test_a_streamed_follow_up_gets_the_same_answer(chat: Served) -> None:
    messages = _conversation("Who checks the Halloway rope bridge?", "Cas Dumont [1].",
                             "Which orchards does the Brannock cider mill press apples from?")
    with chat.client("read") as c, c.stream(
            "POST", "/v1/chat/completions",
            json={"model": "kinject", "messages": messages, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks)
    assert "eleven valley orchards" in streamed, streamed
    assert [c["source_id"] for c in chunks[-1]["citations"]][:1] == ["fu/mill"]
    assert streamed == _answer(_ask(chat, messages))[0]
