"""LangChain against a kinject running elsewhere: KinjectRetriever(base_url=...) and
KinjectRemoteVectorStore over a real `kinject serve` (API + ingest worker + materialiser on
the embedded broker), LangChain's standard suites included, unmodified.

Writes go through Kafka (at least once): a record is accepted at once and searchable once
ingested, so these tests poll (or use the store's wait_s, which polls the server's lineage).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from _serve import start_serve
from _wait import until
from kinject.api.auth import KEYS_FILE, KeyStore
from kinject.config import load_settings
from kinject.integrations.langchain import KinjectRetriever
from kinject.integrations.langchain_remote import KinjectHttpError, KinjectRemoteVectorStore

pytestmark = [pytest.mark.kafka, pytest.mark.peer, pytest.mark.anyio]

WAIT_S = 60.0  # bounds how long a broken build takes to fail; nothing is timed


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Kinject:
    url: str
    write_key: str


@pytest.fixture(scope="module")
def kinject(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
            tiny_lm_dir: Path) -> Iterator[Kinject]:
    """One `kinject serve` for this module, hash embedder; duplicate hiding off, so stores in
    different namespaces may hold the same texts (the standard suite reuses "foo")."""
    data_dir = tmp_path_factory.mktemp("lc-remote")
    settings = load_settings(
        data_dir=data_dir,
        kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 1,
               "topic_prefix": f"lc-{uuid.uuid4().hex[:8]}"},
        models={"embedder": "hash", "generator": str(tiny_lm_dir)},
        ingest={"dedupe": False}, finetune={"materialise_corpus": False})
    _, key = KeyStore(data_dir / KEYS_FILE).create("langchain-test", "write")
    url, stop, thread = start_serve(settings)
    try:
        yield Kinject(url, key)
    finally:
        stop.set()
        thread.join(60)


def remote_store(kinject: Kinject, **kw: Any) -> KinjectRemoteVectorStore:
    return KinjectRemoteVectorStore(kinject.url, kinject.write_key,
                                    namespace=f"lc-{uuid.uuid4().hex[:8]}/", **kw)


def test_a_write_becomes_searchable_then_a_delete_removes_it(kinject: Kinject) -> None:
    store = remote_store(kinject)
    ids = store.add_documents([
        Document(id="kites", page_content="Red kites nest in the old oaks of Marrow Hill.",
                 metadata={"topic": "birds", "n": 1}),
        Document(page_content="The ferry to Vask sails at dawn.", metadata={"topic": "travel"}),
    ])
    assert ids[0] == "kites" and ids[1] and ids[1] != "kites"  # given, and generated
    until(lambda: len(store.get_by_ids(ids)) == 2, WAIT_S, "both records in search")
    docs = store.similarity_search("kites nest Marrow Hill", k=1)
    assert docs == [Document(id="kites", page_content="Red kites nest in the old oaks of "
                             "Marrow Hill.", metadata={"topic": "birds", "n": 1})]
    scored = store.similarity_search_with_score("ferry Vask dawn", k=2)
    assert scored[0][0].id == ids[1] and scored[0][1] > scored[1][1]
    assert scored[0][0].metadata == {"topic": "travel"}
    assert [d.id for d in store.similarity_search("oaks", k=2, filter={"topic": "travel"})
            ] == [ids[1]]
    # Another namespace on the same server sees none of it.
    assert remote_store(kinject).similarity_search("kites nest Marrow Hill", k=3) == []

    store.delete(["kites"])
    until(lambda: store.get_by_ids(["kites"]) == [], WAIT_S, "the delete to apply")
    assert [d.id for d in store.similarity_search("kites nest Marrow Hill", k=3)] == [ids[1]]


def test_wait_s_reads_its_own_writes(kinject: Kinject) -> None:
    store = remote_store(kinject, wait_s=WAIT_S)
    store.add_texts(["Otters sleep holding hands."], [{"v": 1}], ids=["otters"])
    assert store.get_by_ids(["otters"])[0].metadata == {"v": 1}
    # An update of the same id replaces it; the same write again changes nothing.
    store.add_texts(["Otters sleep holding paws."], [{"v": 2}], ids=["otters"])
    store.add_texts(["Otters sleep holding paws."], [{"v": 2}], ids=["otters"])
    assert store.get_by_ids(["otters"]) == [
        Document(id="otters", page_content="Otters sleep holding paws.", metadata={"v": 2})]
    store.add_texts(["Otters sleep holding paws."], [{"v": 3}], ids=["otters"])  # meta only
    assert store.get_by_ids(["otters"])[0].metadata == {"v": 3}
    store.delete(["otters", "never-added"])
    assert store.get_by_ids(["otters"]) == []


async def test_async_write_search_and_delete(kinject: Kinject) -> None:
    store = remote_store(kinject, wait_s=WAIT_S)
    ids = await store.aadd_texts(["Herons fish at the weir.", "Swans nest by the mill."],
                                 ids=["herons", None])
    found = await store.asimilarity_search("herons weir", k=1)
    assert [d.id for d in found] == ["herons"]
    assert {d.id for d in await store.aget_by_ids(ids)} == set(ids)
    await store.adelete(ids)
    assert await store.aget_by_ids(ids) == []


def test_writes_need_a_write_key_and_search_needs_none(kinject: Kinject) -> None:
    with pytest.raises(KinjectHttpError, match="401"):
        KinjectRemoteVectorStore(kinject.url, "wrong-key").add_texts(["Moles dig."])
    with pytest.raises(ValueError, match="own model"):
        KinjectRemoteVectorStore.from_texts(["Moles dig."], object(),  # type: ignore[arg-type]
                                            base_url=kinject.url)
    reader = KinjectRemoteVectorStore(kinject.url, namespace="nothing-here/")  # no key
    assert reader.similarity_search("moles", k=1) == []


def test_remote_retriever_k_filters_and_async(kinject: Kinject) -> None:
    store = remote_store(kinject, wait_s=WAIT_S)
    store.add_texts([f"Beavers build dam number {n}." for n in range(5)],
                    [{"n": n} for n in range(5)], ids=[f"dam{n}" for n in range(5)])
    retriever = KinjectRetriever(base_url=kinject.url, k=4,
                                 filters=[f"source={store.namespace}"])
    assert len(retriever.invoke("beavers build dams")) == 4
    docs = retriever.invoke("beavers build dams", k=2)
    assert len(docs) == 2 and all(d.metadata.keys() == {"n"} for d in docs)
    assert [d.metadata["n"] for d in retriever.invoke("beavers", k=5, filter={"n": 3})] == [3]
    with pytest.raises(TypeError, match="unknown search argument"):
        retriever.invoke("beavers", top_k=1)
    with pytest.raises(KinjectHttpError, match="400"):
        retriever.invoke("beavers", filters=["colour=brown"])


class TestKinjectRemoteVectorStore(VectorStoreIntegrationTests):
    """The standard suite on a remote store: each test gets a namespace of its own on the one
    server, and wait_s so that what it writes is searchable when the write returns."""

    @pytest.fixture()
    def vectorstore(self, kinject: Kinject) -> KinjectRemoteVectorStore:
        return remote_store(kinject, wait_s=WAIT_S)


class TestKinjectRemoteRetriever(RetrieversIntegrationTests):
    url: str = ""
    namespace: str = ""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _documents(cls, kinject: Kinject) -> None:
        store = remote_store(kinject, wait_s=WAIT_S)
        store.add_texts([f"Otters in harbour {n} sleep holding hands." for n in range(6)])
        cls.url, cls.namespace = kinject.url, store.namespace

    @property
    def retriever_constructor(self) -> type[KinjectRetriever]:
        return KinjectRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"base_url": self.url, "k": 2, "filters": [f"source={self.namespace}"]}

    @property
    def retriever_query_example(self) -> str:
        return "where do otters sleep?"


def test_the_api_answers_what_the_remote_classes_read(kinject: Kinject) -> None:
    """The fields the remote classes read are the API's: hits with source_id, chunk_id, text,
    score, meta; lineage with events (op, offset)."""
    store = remote_store(kinject, wait_s=WAIT_S)
    store.add_texts(["Voles tunnel under snow."], ids=["voles"])
    hit = httpx.get(f"{kinject.url}/v1/search", params={"q": "voles snow", "k": 1,
                                                        "filter": f"source={store.namespace}"}
                    ).json()["hits"][0]
    assert {"source_id", "chunk_id", "text", "score", "meta"} <= hit.keys()
    events = httpx.get(f"{kinject.url}/v1/lineage/{store.namespace}voles").json()["events"]
    assert [e["op"] for e in events] == ["upsert"] and isinstance(events[0]["offset"], int)


def test_a_filtered_search_for_more_than_twelve_documents_is_not_refused(kinject: Kinject
                                                                        ) -> None:
    # A LangChain filter is applied to a wider search; that search must stay within the
    # server's max_k (50 by default), so k=20 must not become a request for 80.
    store = remote_store(kinject, wait_s=WAIT_S)
    store.add_documents([Document(id="wide", page_content="Grey herons fish in the weir.",
                                  metadata={"topic": "birds"})])
    hits = store.similarity_search("herons", k=20, filter={"topic": "birds"})
    assert [d.id for d in hits] == ["wide"]


def test_a_namespace_never_sees_nor_deletes_those_of_a_namespace_it_prefixes(
        kinject: Kinject) -> None:
    """Namespaces ``x`` and ``xb`` on one server: the store of ``x`` found ``xb``'s document
    ``1`` as its own ``b1``, and deleting its ``b1`` deleted that document."""
    ns = f"lc-{uuid.uuid4().hex[:8]}"
    short = KinjectRemoteVectorStore(kinject.url, kinject.write_key, namespace=ns,
                                     wait_s=WAIT_S)
    longer = KinjectRemoteVectorStore(kinject.url, kinject.write_key, namespace=ns + "b",
                                      wait_s=WAIT_S)
    longer.add_texts(["Lynx hunt hares in the deep snow."], ids=["1"])
    assert short.similarity_search("lynx hunt hares snow", k=3) == []
    assert short.get_by_ids(["b1"]) == []
    short.delete(["b1"])
    assert [d.id for d in longer.similarity_search("lynx hunt hares snow", k=3)] == ["1"]
    # A namespace holding the separator could again be a prefix of another's ids.
    with pytest.raises(ValueError, match="namespace"):
        KinjectRemoteVectorStore(kinject.url, namespace="team/docs")
