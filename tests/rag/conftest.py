"""A RagService over a few passages, with the hash embedder and a tiny random LM (free mode,
route adapter) or a reader model handed in (read mode)."""

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.models import load_generator
from kinject.rag.service import RagConfig, RagService
from kinject.types import Chunk, content_hash


@pytest.fixture()
def hash_rag(tmp_path: Path, hash_embedder: HashEmbedder, tiny_lm_dir: Path
             ) -> Iterator[Callable[[dict[str, str]], RagService]]:
    """``hash_rag({source_id: text, ...}, reader=None, **config)``: a RagService over those
    passages. The hash embedder's cosines mean nothing, so relevance never abstains here."""
    generator = load_generator(str(tiny_lm_dir), tmp_path / "models", "cpu", "auto")
    made = itertools.count()
    with ExitStack() as stack:
        def make(docs: dict[str, str], reader: Any = None, **config: Any) -> RagService:
            index = stack.enter_context(TextIndex(tmp_path / f"i{next(made)}", hash_embedder))
            index.apply([SourceUpdate(
                op="upsert", source_id=sid,
                chunks=(Chunk(chunk_id=content_hash(sid, text), doc_id=sid, source_id=sid,
                              text=text),),
                vectors=hash_embedder.encode([text]), embedder=hash_embedder.name)
                for sid, text in docs.items()])
            settings = {"cache_size": 0, "min_relevance": -1.0}
            return RagService(index, generator, RagConfig(**{**settings, **config}),
                              reader=(lambda: reader) if reader is not None else None)

        yield make
