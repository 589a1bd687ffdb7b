"""kinject behind LangChain's interfaces, in a real LangChain chain (retrieval is kinject's)."""

from pathlib import Path

import pytest
from langchain_core.documents import Document
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
    assert docs[0].metadata["source_id"] == "kb/otters"
    scored = store.similarity_search_with_score("ferry Vask dawn", k=2)
    assert scored[0][0].metadata["source_id"] == "kb/ferry" and scored[0][1] >= scored[1][1]
    assert store.delete(["kb/otters"])
    assert {d.metadata["source_id"] for d in store.similarity_search("otters", k=5)} == {
        "kb/ferry"}


def test_retriever_in_a_chain(service: KinjectService) -> None:
    KinjectVectorStore(service).add_texts(
        ["The keeper of the Gullspire lighthouse is Senna Calloway.",
         "The ferry to Vask sails at dawn."], ids=["kb/gullspire", "kb/ferry"])
    retriever = KinjectRetriever(service=service, k=1)
    seen: list[str] = []

    def format_docs(docs: list[Document]) -> str:
        return "\n".join(f"[{d.metadata['source_id']}] {d.page_content}" for d in docs)

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
