"""LangChain's own standard suites (langchain-tests), unmodified, against kinject's
KinjectVectorStore and KinjectRetriever: only the fixtures and constructors are ours.

The suites' async tests run on anyio's pytest plugin (asyncio backend): pytest-asyncio is
kept off in pyproject's addopts so it changes nothing for the rest of our tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from kinject.config import load_settings
from kinject.integrations.langchain import KinjectRetriever, KinjectVectorStore
from kinject.service import KinjectService

pytestmark = [pytest.mark.peer, pytest.mark.anyio]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # LangChain's executor helpers need an asyncio loop


def open_service(data_dir: Path) -> KinjectService:
    """A kinject service with the hash embedder and no broker: writes go straight into its
    index."""
    return KinjectService(load_settings(data_dir=data_dir, models={"embedder": "hash"})).open()


class TestKinjectVectorStore(VectorStoreIntegrationTests):
    """A store with an index of its own, embedding with the suite's own fake embedding."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[KinjectVectorStore]:
        with KinjectVectorStore(embedding=self.get_embeddings(),
                                directory=tmp_path / "store") as store:
            yield store


class TestKinjectServiceVectorStore(VectorStoreIntegrationTests):
    """A store over a KinjectService's index (the index's own embedder)."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[KinjectVectorStore]:
        service = open_service(tmp_path)
        try:
            yield KinjectVectorStore(service)
        finally:
            service.close()


class TestKinjectRetriever(RetrieversIntegrationTests):
    service: KinjectService | None = None

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _service(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        service = open_service(tmp_path_factory.mktemp("retriever"))
        KinjectVectorStore(service).add_texts(
            [f"Otters in harbour {n} sleep holding hands." for n in range(6)])
        cls.service = service
        try:
            yield
        finally:
            service.close()

    @property
    def retriever_constructor(self) -> type[KinjectRetriever]:
        return KinjectRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"service": self.service, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "where do otters sleep?"
