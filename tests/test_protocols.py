"""The real parts satisfy the seams' Protocols (kinject/protocols.py): the index is what RAG
searches, the loaded and the serving generator are what RAG writes with, the registry is what
serving reads, the corpus store is what a cycle reads. mypy checks the signatures where they
are wired (app/); these checks keep a rename on one side from passing unnoticed at run time."""

from __future__ import annotations

from pathlib import Path

from kinject.protocols import (
    AdapterSource,
    BatchRetriever,
    CorpusSource,
    Generator,
    Retriever,
    Tokenizer,
)
from kinject.types import Hit


def test_the_text_index_is_a_batch_retriever(tmp_path: Path, hash_embedder: object) -> None:
    from kinject.index.text_index import TextIndex

    with TextIndex(tmp_path / "index", hash_embedder) as index:  # type: ignore[arg-type]
        assert isinstance(index, Retriever)
        assert isinstance(index, BatchRetriever)
        assert index.search("anything", 3) == []
        assert index.search_many(["one", "two"], 3) == [[], []]


def test_a_users_own_index_with_search_alone_is_a_retriever_not_a_batch_one() -> None:
    class Mine:
        def search(self, query: str, k: int = 5, filters: object = None,
                   mode: str = "hybrid") -> list[Hit]:
            return []

        def __len__(self) -> int:
            return 0

    assert isinstance(Mine(), Retriever)
    assert not isinstance(Mine(), BatchRetriever)
    assert not isinstance(object(), Retriever)


def test_loaded_and_serving_generators_are_generators(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kinject.finetune.registry import AdapterRegistry
    from kinject.finetune.serving import AdapterSwitcher
    from kinject.models import LoadedGenerator

    loaded = LoadedGenerator(model=AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)),
                             tokenizer=AutoTokenizer.from_pretrained(str(tiny_lm_dir)),
                             device="cpu", name="tiny")
    assert isinstance(loaded, Generator)
    assert isinstance(loaded.tokenizer, Tokenizer)
    serving = AdapterSwitcher(loaded, AdapterRegistry(tmp_path / "adapters")).generator(None)
    assert isinstance(serving, Generator)
    assert serving.name == "tiny@base"


def test_the_registry_is_an_adapter_source(tmp_path: Path) -> None:
    from kinject.finetune.registry import AdapterRegistry

    registry = AdapterRegistry(tmp_path / "adapters")
    assert isinstance(registry, AdapterSource)
    assert registry.active() is None


def test_the_corpus_store_is_a_corpus_source(tmp_path: Path) -> None:
    from kinject.finetune.corpus import CorpusStore

    with CorpusStore(tmp_path / "corpus.sqlite") as corpus:
        assert isinstance(corpus, CorpusSource)
        assert corpus.new_since(0) == 0
        assert corpus.sources() == set()
