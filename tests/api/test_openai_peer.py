"""The official openai client against a live `kinject serve`, as users of vLLM, llama.cpp's
server and Ollama use it: any key for reads, stop / max_tokens / sampling options honoured
or refused with a 400, streamed usage, token counts by the tokenizer, follow-up questions
made standalone by the conversation, and /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from _api_helpers import Served, publish

from _wait import until

pytestmark = [pytest.mark.kafka, pytest.mark.peer]

FACT = "The Orvane ferry leaves Pellick harbour at seven every morning."
QUESTION = "When does the Orvane ferry leave Pellick harbour?"


@pytest.fixture(scope="module")
def client(peer_served: Served) -> openai.OpenAI:
    publish(peer_served, {"source_id": "peer/ferry", "content": FACT})

    def indexed() -> bool:
        with peer_served.client() as c:
            hits = c.get("/v1/search", params={"q": "Orvane ferry Pellick"}).json()["hits"]
        return any(h["source_id"] == "peer/ferry" for h in hits)

    until(indexed, what="the fact in the index")
    # what users of servers without keys write: the SDK sends it as a bearer token
    return openai.OpenAI(base_url=f"{peer_served.url}/v1", api_key="EMPTY", max_retries=0,
                         timeout=120)


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def _tokens(tok: Any, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False))


def _ask(client: openai.OpenAI, question: str = QUESTION, **kw: Any) -> Any:
    return client.chat.completions.create(
        model="kinject", messages=[{"role": "user", "content": question}], **kw)


def test_any_key_reads_but_writes_need_a_real_one(client: openai.OpenAI,
                                                  peer_served: Served) -> None:
    assert _ask(client).choices[0].message.content
    import httpx

    r = httpx.post(f"{peer_served.url}/v1/records", json={"records": [
        {"source_id": "peer/x", "content": "x"}]}, headers={"Authorization": "Bearer EMPTY"})
    assert r.status_code == 401


def test_models_lists_chat_models_and_the_embedder(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["kinject", "kinject-base"] and "kinject-embed" in ids


def test_answer_cites_and_counts_tokens_with_the_tokenizer(client: openai.OpenAI,
                                                           tokenizer: Any) -> None:
    out = _ask(client)
    text = out.choices[0].message.content
    assert text and "[1]" in text and out.choices[0].finish_reason == "stop"
    assert (out.model_extra or {})["citations"][0]["source_id"] == "peer/ferry"
    assert out.usage is not None
    assert out.usage.completion_tokens == _tokens(tokenizer, text)
    assert out.usage.completion_tokens != len(text.split())  # tokens, not words
    # the prompt: the user's message in the chat template, and the passage read
    assert out.usage.prompt_tokens > _tokens(tokenizer, QUESTION) + _tokens(tokenizer, FACT)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stop_ends_the_answer_before_the_stop_string(client: openai.OpenAI) -> None:
    full = _ask(client).choices[0].message.content
    assert full and "Pellick" in full
    out = _ask(client, stop=["Pellick", "never-there"])
    assert out.choices[0].message.content == full[: full.index("Pellick")]
    assert out.choices[0].finish_reason == "stop"
    streamed = _ask(client, stop="Pellick", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed
                   if c.choices) == full[: full.index("Pellick")]


def test_max_tokens_cuts_the_answer_by_tokens(client: openai.OpenAI, tokenizer: Any) -> None:
    full = _ask(client).choices[0].message.content
    assert full and _tokens(tokenizer, full) > 4
    for kw in ({"max_tokens": 4}, {"max_completion_tokens": 4}):
        out = _ask(client, **kw)
        text = out.choices[0].message.content
        assert out.choices[0].finish_reason == "length", kw
        assert text and full.startswith(text) and len(text) < len(full)
        assert text == tokenizer.decode(tokenizer.encode(full, add_special_tokens=False)[:4])
        assert out.usage is not None and out.usage.completion_tokens <= 4
    chunks = list(_ask(client, max_tokens=4, stream=True))
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_streaming_sends_a_usage_chunk_when_asked(client: openai.OpenAI,
                                                  tokenizer: Any) -> None:
    chunks = list(_ask(client, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == _ask(client).choices[0].message.content
    assert last.usage.completion_tokens == _tokens(tokenizer, text)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    # not asked: no usage chunk, as OpenAI
    plain = list(_ask(client, stream=True))
    assert plain[-1].choices and plain[-1].usage is None


def test_temperature_and_seed_reach_the_generator(client: openai.OpenAI) -> None:
    def closed_book(**kw: Any) -> str:
        out = client.chat.completions.create(
            model="kinject-base", messages=[{"role": "user", "content": "Say something."}],
            extra_body={"route": "adapter"}, **kw)
        return out.choices[0].message.content or ""

    greedy = closed_book(temperature=0)
    assert closed_book() == greedy  # temperature 0 or none: greedy
    samples = [closed_book(temperature=1.5, seed=s) for s in (1, 2, 3)]
    assert samples[0] == closed_book(temperature=1.5, seed=1)  # a seed repeats its sample
    assert len({greedy, *samples}) >= 3, samples  # sampling draws other texts


def test_what_cannot_be_honoured_is_a_clear_400(client: openai.OpenAI) -> None:
    for kw, field in (({"n": 2}, "n"),
                      ({"logprobs": True}, "logprobs"),
                      ({"presence_penalty": 0.5}, "presence_penalty"),
                      ({"response_format": {"type": "json_object"}}, "response_format"),
                      ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                      ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
                      ({"temperature": 3}, "temperature")):
        with pytest.raises(openai.BadRequestError) as err:
            _ask(client, **kw)
        assert field in str(err.value.body), (kw, err.value.body)
    # an unknown field is ignored, as vLLM does
    assert _ask(client, extra_body={"guided_choice": None, "x_trace": "1"}).choices


def test_a_follow_up_is_answered_from_the_conversation(client: openai.OpenAI,
                                                      peer_served: Served) -> None:
    other = "The Dunmore ferry leaves Tarsk harbour at noon every day."
    publish(peer_served, {"source_id": "peer/ferry-2", "content": other})

    def indexed() -> bool:
        with peer_served.client() as c:
            hits = c.get("/v1/search", params={"q": "Dunmore ferry Tarsk"}).json()["hits"]
        return any(h["source_id"] == "peer/ferry-2" for h in hits)

    until(indexed, what="the second ferry in the index")
    follow_up = "At what time does it leave?"
    for ferry, source, time_ in (("Orvane", "peer/ferry", "seven"),
                                 ("Dunmore", "peer/ferry-2", "noon")):
        opener = f"Tell me about the {ferry} ferry."
        first = _ask(client, opener).choices[0].message.content
        out = client.chat.completions.create(model="kinject", messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": opener},
            {"role": "assistant", "content": first},
            {"role": "user", "content": follow_up}])
        cites = (out.model_extra or {})["citations"]
        assert cites and cites[0]["source_id"] == source, (ferry, cites)
        assert time_ in (out.choices[0].message.content or ""), ferry


def test_completions_answer_each_prompt(client: openai.OpenAI, tokenizer: Any) -> None:
    chat = _ask(client).choices[0].message.content
    out = client.completions.create(model="kinject", prompt=QUESTION)
    assert out.object == "text_completion" and out.choices[0].text == chat
    assert out.usage is not None and out.usage.completion_tokens == _tokens(tokenizer, chat)
    two = client.completions.create(model="kinject", prompt=[QUESTION, "Who is Zorblax?"])
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == chat
    cut = client.completions.create(model="kinject", prompt=QUESTION, stop=["Pellick"])
    assert cut.choices[0].text == chat[: chat.index("Pellick")]
    chunks = list(client.completions.create(model="kinject", prompt=QUESTION, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == chat
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_embeddings_are_the_index_embedders(client: openai.OpenAI,
                                            peer_served: Served) -> None:
    from kinject.index.embedders import load_embedder

    texts = [FACT, "马罗研究所成立于1987年。"]
    mine = load_embedder(peer_served.settings.models.embedder)
    mine.warm_up()
    expected = mine.encode(texts)
    out = client.embeddings.create(model="kinject-embed", input=texts)
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert [d.index for d in out.data] == [0, 1] and out.model == "kinject-embed"
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert out.usage.prompt_tokens > 0
    one = client.embeddings.create(model="kinject-embed", input=FACT)
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-6)
    raw = client.embeddings.create(model="kinject-embed", input=texts,
                                   encoding_format="base64")
    b64 = raw.data[0].embedding
    assert isinstance(b64, str)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(b64), dtype="<f4"),
                                  expected[0])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input=FACT)
