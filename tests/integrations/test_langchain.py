"""kinject behind LangChain's interfaces, in a real LangChain chain (retrieval is kinject's)."""

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from kinject.config import load_settings
from kinject.integrations.langchain import KinjectRetriever, KinjectVectorStore
from kinject.service import KinjectService


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KINJECT_MODELS__EMBEDDER", "hash")
    with KinjectService(load_settings(data_dir=tmp_path)) as svc:
        yield svc


def test_vector_store_adds_searches_and_deletes(service: KinjectService) -> None:
    store = KinjectVectorStore(service)
    ids = store.add_texts(["otters sleep under the pier", "the ferry to Vask sails at dawn"],
                          [{"tag": "animals"}, {"tag": "travel"}], ids=["kb/otters", "kb/ferry"])
    assert ids == ["kb/otters", "kb/ferry"]
    docs = store.similarity_search("where do otters sleep", k=1)
    assert docs[0].page_content == "otters sleep under the pier"
    assert docs[0].id == "kb/otters" and docs[0].metadata == {"tag": "animals"}
    scored = store.similarity_search_with_score("ferry Vask dawn", k=2)
    assert scored[0][0].id == "kb/ferry" and scored[0][1] >= scored[1][1]
    assert store.delete(["kb/otters"])
    assert {d.id for d in store.similarity_search("otters", k=5)} == {"kb/ferry"}


def test_retriever_in_a_chain(service: KinjectService) -> None:
    KinjectVectorStore(service).add_texts(
        ["The keeper of the Gullspire lighthouse is Senna Calloway.",
         "The ferry to Vask sails at dawn."], ids=["kb/gullspire", "kb/ferry"])
    retriever = KinjectRetriever(service=service, k=1)
    seen: list[str] = []

    def format_docs(docs: list[Document]) -> str:
        return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)

    def remember(prompt: object) -> object:
        seen.append(str(prompt))
        return prompt

    prompt = PromptTemplate.from_template("Context:\n{context}\nQuestion: {question}\nAnswer:")
    chain = ({"context": retriever | format_docs, "question": RunnablePassthrough()}
             | prompt | RunnableLambda(remember) | FakeListLLM(responses=["Senna Calloway"])
             | StrOutputParser())
    assert chain.invoke("Who keeps the Gullspire lighthouse?") == "Senna Calloway"
    assert "[kb/gullspire] The keeper of the Gullspire lighthouse" in seen[0]
    assert "ferry" not in seen[0]  # k=1: only the retrieved passage reached the prompt


def test_a_service_store_refuses_another_embedding(service: KinjectService) -> None:
    with pytest.raises(ValueError, match=r"own embedder \(hash:64\).*DeterministicFakeEmbedding"):
        KinjectVectorStore(service, embedding=DeterministicFakeEmbedding(size=6))
    with pytest.raises(ValueError, match="embedding=DeterministicFakeEmbedding"):
        KinjectVectorStore.from_texts(["a"], DeterministicFakeEmbedding(size=6), service=service)
    store = KinjectVectorStore.from_texts(["the ferry sails at dawn"], None, service=service,
                                          ids=["kb/ferry"])
    assert [d.id for d in store.get_by_ids(["kb/ferry"])] == ["kb/ferry"]
    # The store's own embeddings (the index's embedder) are accepted back.
    assert KinjectVectorStore(service, embedding=store.embeddings).index is service.index


def test_an_own_store_embeds_with_the_embedding_given(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=8)
    with KinjectVectorStore.from_texts(
            ["red kites nest in oaks", "the ferry sails at dawn"], emb,
            [{"n": 1}, {"n": 2}], ids=["a", "b"], directory=tmp_path / "lc") as store:
        assert store.index.embedder.dim == 8 and store.embeddings is emb
        # The fake embedding maps equal texts to equal vectors, unrelated ones anywhere:
        # a vector search for a stored text's own vector finds it first.
        found = store.similarity_search_by_vector(emb.embed_query("the ferry sails at dawn"), k=1)
        assert found == [Document(id="b", page_content="the ferry sails at dawn",
                                  metadata={"n": 2})]
    # It lives in the directory given: reopened, it still holds both.
    with KinjectVectorStore(embedding=emb, directory=tmp_path / "lc") as again:
        assert {d.id for d in again.get_by_ids(["a", "b"])} == {"a", "b"}


def test_from_documents_keeps_given_ids_and_makes_the_missing_ones(
        service: KinjectService) -> None:
    store = KinjectVectorStore.from_documents(
        [Document(id="kb/a", page_content="alpha otters", metadata={"x": [1, 2]}),
         Document(page_content="beta otters")], None, service=service)
    docs = store.similarity_search("otters", k=5)
    assert len(docs) == 2 and {d.page_content for d in docs} == {"alpha otters", "beta otters"}
    given = next(d for d in docs if d.page_content == "alpha otters")
    made = next(d for d in docs if d.page_content == "beta otters")
    assert given.id == "kb/a" and given.metadata == {"x": [1, 2]}
    assert made.id and made.id != "kb/a" and made.metadata == {}


def test_a_temporary_store_is_removed_on_close() -> None:
    store = KinjectVectorStore(embedding=DeterministicFakeEmbedding(size=4))
    store.add_texts(["one"])
    folder = store.index.directory
    assert folder.exists()
    store.close()
    assert not folder.exists()


def test_search_kwargs_k_filter_and_unknown(service: KinjectService) -> None:
    store = KinjectVectorStore(service)
    store.add_texts([f"otters nest {n}" for n in range(6)],
                    [{"n": n, "even": n % 2 == 0} for n in range(6)],
                    ids=[f"kb/o{n}" for n in range(6)])
    store.add_texts(["otters of the south"], ids=["other/o"])
    evens = store.similarity_search("otters nest", k=5, filter={"even": True})
    assert sorted(d.metadata["n"] for d in evens) == [0, 2, 4]
    odd = store.similarity_search("otters nest", k=5, filter=lambda d: d.metadata.get("n") == 3)
    assert [d.id for d in odd] == ["kb/o3"]
    assert {d.id for d in store.similarity_search("otters", k=10, filters=["source=other/"])
            } == {"other/o"}
    with pytest.raises(TypeError, match="unknown search argument.*top_k"):
        store.similarity_search("otters", top_k=2)
    retriever = KinjectRetriever(service=service, k=4, filters=["source=kb/"])
    assert len(retriever.invoke("otters nest", k=2)) == 2
    assert all(d.id.startswith("kb/") for d in retriever.invoke("otters", k=7))
    assert [d.id for d in retriever.invoke("otters", filters=["source=other/"])] == ["other/o"]
    with pytest.raises(TypeError, match="unknown search argument"):
        retriever.invoke("otters", top_k=2)


def test_mixed_ids_and_documents_from_elsewhere(service: KinjectService) -> None:
    store = KinjectVectorStore(service)
    ids = store.add_documents([Document(id="kb/given", page_content="otters float"),
                               Document(page_content="otters dive")])
    assert ids[0] == "kb/given" and ids[1] and ids[1] != "kb/given"
    # A chunk that reached the index another way (not through LangChain): its source id is
    # the document's id, kinject's own metadata is shown, never the search scores.
    from kinject.index.changes import SourceUpdate
    from kinject.types import Chunk

    chunk = Chunk(chunk_id="c1", doc_id="d1", source_id="feed/1", text="otters sing",
                  meta={"title": "Feed"})
    service.index.apply([SourceUpdate(op="upsert", source_id="feed/1", chunks=(chunk,),
                                      vectors=service.index.embedder.encode([chunk.text]))])
    doc = store.similarity_search("otters sing", k=1)[0]
    assert doc.id == "feed/1"
    assert doc.metadata["title"] == "Feed" and doc.metadata["chunk_id"] == "c1"
    assert not {"fused", "vector_score", "bm25_score", "space", "score"} & set(doc.metadata)
    assert store.delete(["feed/1", "never/added"])
    assert store.get_by_ids(["feed/1", "never/added"]) == []
    with pytest.raises(ValueError, match="give the ids"):
        store.delete()


def test_re_adding_a_text_with_new_metadata_updates_it(service: KinjectService) -> None:
    store = KinjectVectorStore(service)
    store.add_texts(["otters float"], [{"v": 1}], ids=["kb/o"])
    store.add_texts(["otters float"], [{"v": 2}], ids=["kb/o"])
    assert store.get_by_ids(["kb/o"]) == [Document(id="kb/o", page_content="otters float",
                                                   metadata={"v": 2})]
    assert store.similarity_search("otters", k=5)[0].metadata == {"v": 2}


@pytest.mark.kafka
def test_a_served_store_publishes_records_rather_than_writing_its_replica(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """With a broker attached (kinject serve), writes go to kinject.records like every other
    write: every replica, the lineage and the fine-tuning corpus see them, and a delete
    reaches every replica rather than this one's index alone."""
    settings = load_settings(data_dir=tmp_path, models={"embedder": "hash"},
                             kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 1,
                                    "topic_prefix": "lc-served"})
    with KinjectService(settings) as svc:
        svc.attach(kafka_bootstrap)
        store = KinjectVectorStore(svc)
        store.add_texts(["otters sleep under the pier"], ids=["kb/otters"])
        store.delete(["kb/ferry"])
        outbox = svc.broker.outbox
        assert outbox is not None
        keys = [e.key for e in outbox.accepted() + outbox.pending()]
        assert keys == [b"kb/otters", b"kb/ferry"]
        assert store.get_by_ids(["kb/otters"]) == []  # not written behind the log's back
