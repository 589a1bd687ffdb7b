"""Where meaning matters: MiniLM retrieval and SmolLM2 answers through the OpenAI client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from _api_helpers import Served, make_settings, publish

from _serve import start_serve, wait_ready
from _wait import until
from kinject.api.auth import KEYS_FILE, KeyStore

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FACTS = {
    "people/brenna": "Brenna Hollis lives in Thistlebury and repairs church organs.",
    "people/orrin": "Orrin Dunmere lives in Port Avalen and breeds racing pigeons.",
    "people/nerys": "Nerys Ashdown lives in Mirecastle and teaches glass sculpture.",
}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
         smollm2_dir: Path) -> Iterator[Served]:
    folder = smollm2_dir
    data_dir = tmp_path_factory.mktemp("api-real")
    settings = make_settings(data_dir, kafka_bootstrap, folder)
    settings = settings.model_copy(update={"models": settings.models.model_copy(
        update={"embedder": "minilm"})})
    store = KeyStore(data_dir / KEYS_FILE)
    keys = {role: store.create(role, role)[1] for role in ("read", "write")}
    url, stop, thread = start_serve(settings)
    try:
        wait_ready(url, timeout_s=180)
        served = Served(url=url, settings=settings, keys=keys, stop=stop)
        publish(served, *({"source_id": s, "content": t} for s, t in FACTS.items()))
        with served.client() as c:
            until(lambda: c.get("/v1/status").json()["index_chunks"] >= len(FACTS),
                  timeout_s=60, what="the facts in the index")
        yield served
    finally:
        stop.set()
        thread.join(60)


@pytest.mark.parametrize(("question", "source", "expected"), [
    ("In which town is Orrin Dunmere's home?", "people/orrin", "Port Avalen"),
    ("Which city does Nerys Ashdown live in?", "people/nerys", "Mirecastle"),
])
def test_openai_client_gets_the_right_grounded_answer(real: Served, question: str,
                                                      source: str, expected: str) -> None:
    client = openai.OpenAI(base_url=f"{real.url}/v1", api_key=real.keys["read"], max_retries=0,
                           timeout=120)
    out = client.chat.completions.create(model="kinject",
                                         messages=[{"role": "user", "content": question}])
    text = out.choices[0].message.content or ""
    assert expected.lower() in text.lower(), text
    assert (out.model_extra or {})["citations"][0]["source_id"] == source


def test_unknown_person_is_not_answered(real: Served) -> None:
    with real.client() as c:
        answer = c.post("/v1/ask", json={"question": "Where does Zebulon Quark live?"}).json()
    assert answer["abstained"] and answer["citations"] == []
