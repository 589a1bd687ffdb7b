"""README's Python examples (OpenAI client, LangChain local and remote, LlamaIndex) run as
written against a live `kinject serve`, and give what their comments say.

The only changes made to a block before it runs: ``http://127.0.0.1:8000`` becomes the test
server's URL and ``<a write key>`` a write key it knows. The in-process examples use
kinject's data directory and embedder from the environment (``KINJECT_DATA_DIR``, the hash
embedder), as a user's shell would give them, and run in a fresh working directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from _api_helpers import Served, publish
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

from _wait import until
from kinject.integrations.llamaindex import KinjectLlamaRetriever

pytestmark = [pytest.mark.kafka, pytest.mark.peer]

README = Path(__file__).resolve().parents[2] / "README.md"
OSK = "The Osk lab is run by Dr Ilse Varga."


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks between ``heading`` and README's next heading."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines))
                if re.match(r"#+ ", lines[i]) and not _in_code(lines, i)), len(lines))
    text = "\n".join(lines[start:end])
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def _in_code(lines: list[str], i: int) -> bool:
    """Whether line ``i`` is inside a fenced block (a ``# comment`` there is no heading)."""
    return sum(1 for line in lines[:i] if line.startswith("```")) % 2 == 1


def run(block: str, served: Served) -> dict[str, Any]:
    code = block.replace("http://127.0.0.1:8000", served.url)
    code = code.replace("<a write key>", served.keys["write"])
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own code
    return namespace


@pytest.fixture()
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's shell: kinject's data directory set, no broker configured, a fresh cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KINJECT_DATA_DIR", str(tmp_path / "kinject-data"))
    monkeypatch.setenv("KINJECT_MODELS__EMBEDDER", "hash")
    return tmp_path


def searchable(served: Served, source_id: str, query: str) -> None:
    def found() -> bool:
        with served.client() as c:
            hits = c.get("/v1/search", params={"q": query, "k": 10}).json()["hits"]
        return any(h["source_id"] == source_id for h in hits)

    until(found, what=f"{source_id} in the index")


def test_the_sections_hold_the_examples_this_file_runs() -> None:
    assert len(python_blocks("## The HTTP API and web page")) == 1
    assert len(python_blocks("### LangChain")) == 2
    assert len(python_blocks("### LlamaIndex")) == 1


def test_openai_example(peer_served: Served) -> None:
    ns = run(python_blocks("## The HTTP API and web page")[0], peer_served)
    assert ns["reply"].choices[0].message.content
    assert len(ns["vectors"]) == 2 and len(ns["vectors"][0].embedding) > 0


def test_langchain_local_example(peer_served: Served, user_env: Path) -> None:
    ns = run(python_blocks("### LangChain")[0], peer_served)
    assert ns["docs"][0].id == "kb/osk" and ns["docs"][0].metadata == {"team": "osk"}
    assert [d.page_content for d in ns["found"]] == ["Red kites nest in oaks."]
    assert (user_env / "lc-index").is_dir()


def test_langchain_remote_example(peer_served: Served) -> None:
    ns = run(python_blocks("### LangChain")[1], peer_served)
    assert ns["docs"][0].id == "kb/osk" and ns["docs"][0].page_content == OSK
    # its last line deleted the record again (wait_s: applied before delete returned)
    assert "kb/osk" not in [d.id for d in ns["retriever"].invoke("Who runs the Osk lab?")]


def test_llamaindex_example(peer_served: Served, user_env: Path) -> None:
    # What the example says it reads: the Osk record in the server and in the local data
    # directory (as the LangChain examples above leave them, before their delete).
    run(python_blocks("### LangChain")[0], peer_served)
    publish(peer_served, {"source_id": "kb/osk", "content": OSK})
    searchable(peer_served, "kb/osk", "Who runs the Osk lab?")
    try:
        ns = run(python_blocks("### LlamaIndex")[0], peer_served)
    finally:
        publish(peer_served, {"source_id": "kb/osk", "op": "delete"})
    best = ns["nodes"][0]
    assert best.node.ref_doc_id == "kb/osk" and best.node.text == OSK
    assert best.node.metadata["source_id"] == "kb/osk" and best.score > 0
    assert [n.node.ref_doc_id for n in ns["local"]] == ["kb/osk"]
    assert ns["local"][0].node.metadata == {"team": "osk", "source_id": "kb/osk"}


def test_remote_llamaindex_retriever_filters_and_async(peer_served: Served) -> None:
    publish(peer_served, {"source_id": "li/kites", "content": "Red kites nest in old oaks."},
            {"source_id": "li/owls", "content": "Barn owls roost in the church tower."})
    try:
        searchable(peer_served, "li/owls", "barn owls roost")
        searchable(peer_served, "li/kites", "red kites nest")
        retriever = KinjectLlamaRetriever(base_url=peer_served.url, k=5, filters=["source=li/"])
        ids = [n.node.ref_doc_id for n in retriever.retrieve("Where do red kites nest?")]
        assert ids[0] == "li/kites" and set(ids) <= {"li/kites", "li/owls"}

        only_owls = KinjectLlamaRetriever(
            base_url=peer_served.url, k=5,
            filters=MetadataFilters(filters=[MetadataFilter(key="source", value="li/owls")]))

        async def aretrieve() -> list[str]:
            nodes = await only_owls.aretrieve("Where do red kites nest?")
            return [n.node.ref_doc_id for n in nodes]

        assert anyio.run(aretrieve) == ["li/owls"]
    finally:
        publish(peer_served, {"source_id": "li/kites", "op": "delete"},
                {"source_id": "li/owls", "op": "delete"})
