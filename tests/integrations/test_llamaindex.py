"""kinject as a LlamaIndex retriever over an in-process service, in a real LlamaIndex query
engine (retrieval is kinject's; the remote retriever is tested against a live server in
tests/api/test_readme_snippets.py)."""

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

from kinject.config import load_settings
from kinject.integrations.langchain import KinjectVectorStore
from kinject.integrations.llamaindex import KinjectLlamaRetriever, kinject_filters
from kinject.service import KinjectService

LIGHTHOUSE = "The keeper of the Gullspire lighthouse is Senna Calloway."
FERRY = "The ferry to Vask sails at dawn from Pellick harbour."
TEA = "绿茶产自杭州的龙井村。"


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KinjectService]:
    monkeypatch.delenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KINJECT_MODELS__EMBEDDER", "hash")
    with KinjectService(load_settings(data_dir=tmp_path)) as svc:
        KinjectVectorStore(svc).add_texts(
            [LIGHTHOUSE, FERRY, TEA], [{"topic": "people"}, {"topic": "travel"}, {}],
            ids=["kb/gullspire", "travel/ferry", "kb/tea"])
        yield svc


def test_nodes_carry_the_chunk_its_source_metadata_and_score(service: KinjectService) -> None:
    nodes = KinjectLlamaRetriever(service, k=2).retrieve("Who keeps the Gullspire lighthouse?")
    assert len(nodes) == 2
    best = nodes[0]
    assert best.node.get_content() == LIGHTHOUSE
    assert best.node.ref_doc_id == "kb/gullspire"
    chunk_id = service.search("Who keeps the Gullspire lighthouse?", 1)[0].chunk_id
    assert best.node.node_id == chunk_id
    assert best.node.metadata == {"topic": "people", "source_id": "kb/gullspire"}
    assert best.score is not None and nodes[1].score is not None
    assert 0 < best.score <= 1 and best.score >= nodes[1].score
    # what LlamaIndex puts in an LLM prompt: the passage with its source and metadata
    assert "source_id: kb/gullspire" in best.node.get_content(MetadataMode.LLM)


def test_k_and_filters(service: KinjectService) -> None:
    question = "Who keeps the Gullspire lighthouse?"
    assert len(KinjectLlamaRetriever(service, k=1).retrieve(question)) == 1
    for flt in (["source=travel/"], {"source": "travel/"},
                MetadataFilters(filters=[MetadataFilter(key="source", value="travel/")])):
        nodes = KinjectLlamaRetriever(service, k=3, filters=flt).retrieve(question)
        assert [n.node.ref_doc_id for n in nodes] == ["travel/ferry"]
    zh = MetadataFilters(filters=[MetadataFilter(key="lang", value=["zh", "mixed"],
                                                 operator=FilterOperator.IN)])
    nodes = KinjectLlamaRetriever(service, k=3, filters=zh).retrieve("茶")
    assert [n.node.ref_doc_id for n in nodes] == ["kb/tea"]
    assert [n.node.ref_doc_id for n in
            KinjectLlamaRetriever(service, k=3, mode="bm25").retrieve("Vask ferry")] == [
        "travel/ferry"]


def test_filters_kinject_cannot_apply_are_refused_when_built() -> None:
    with pytest.raises(ValueError, match="not 'topic'"):
        kinject_filters(MetadataFilters(filters=[MetadataFilter(key="topic", value="x")]))
    with pytest.raises(ValueError, match=r"cannot filter kind != 'csv'"):
        kinject_filters(MetadataFilters(filters=[
            MetadataFilter(key="kind", value="csv", operator=FilterOperator.NE)]))
    with pytest.raises(ValueError, match="AND only"):
        kinject_filters(MetadataFilters(filters=[MetadataFilter(key="lang", value="en")],
                                        condition="or"))
    assert kinject_filters(MetadataFilters(filters=[
        MetadataFilter(key="tag", value=["a", "b"], operator=FilterOperator.ALL),
        MetadataFilter(key="kind", value=["csv", "tsv"], operator=FilterOperator.IN),
    ])) == ["tag=a", "tag=b", "kind=csv", "kind=tsv"]


def test_async_retrieve_gives_the_same_nodes(service: KinjectService) -> None:
    retriever = KinjectLlamaRetriever(service, k=2)
    sync = retriever.retrieve("ferry to Vask")

    async def run() -> list[str]:
        return [n.node.node_id for n in await retriever.aretrieve("ferry to Vask")]

    assert anyio.run(run) == [n.node.node_id for n in sync]


def test_in_a_query_engine_only_the_retrieved_passage_reaches_the_llm(
        service: KinjectService) -> None:
    # MockLLM answers with the prompt it was given: what the engine sent is what it says.
    engine = RetrieverQueryEngine.from_args(KinjectLlamaRetriever(service, k=1), llm=MockLLM())
    response = engine.query("Who keeps the Gullspire lighthouse?")
    assert LIGHTHOUSE in str(response) and "ferry" not in str(response)
    assert [n.node.ref_doc_id for n in response.source_nodes] == ["kb/gullspire"]


def test_constructor_names_what_is_wrong(service: KinjectService) -> None:
    with pytest.raises(ValueError, match="either service= .* or base_url="):
        KinjectLlamaRetriever()
    with pytest.raises(ValueError, match="not both"):
        KinjectLlamaRetriever(service, base_url="http://127.0.0.1:8000")
    with pytest.raises(ValueError, match="k must be"):
        KinjectLlamaRetriever(service, k=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        KinjectLlamaRetriever(service, mode="semantic")
    with pytest.raises(ValueError, match="http"):
        KinjectLlamaRetriever(base_url="kinject:8000")
    remote = KinjectLlamaRetriever(base_url="http://127.0.0.1:8000", api_key="sk-secret")
    assert "sk-secret" not in repr(remote)
