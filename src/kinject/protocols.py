"""The seams between the packages, as typing Protocols: what one side needs of the other.

A seam is named by its user, so another implementation (a user's own index, a remote model,
a registry on other storage) only has to provide what is listed here:

- ``Retriever``      what ``rag/`` needs of ``index/`` (``index.text_index.TextIndex``):
                     ranked ``Hit``s for a query, and how many chunks it holds.
- ``BatchRetriever`` a Retriever that searches several queries in one call (their embeddings
                     computed together); ``rag/`` uses it when the index has it.
- ``Tokenizer``      what answering and the API count and decode with (a transformers
                     tokenizer).
- ``Generator``      what ``rag/`` writes answers with (``models.LoadedGenerator``, or
                     ``finetune.serving.ServingGenerator``: the same with the active adapter).
- ``AdapterSource``  what serving (``finetune.serving.AdapterSwitcher``) needs of the adapter
                     registry (``finetune.registry.AdapterRegistry``).
- ``CorpusSource``   what a fine-tuning cycle reads from the corpus
                     (``finetune.corpus.CorpusStore``).

The reader seam (``Reader``: questions and passages in, readings out) is declared by its
owner, :mod:`kinject.rag.reader`, next to the reader it describes. ``Embedder`` is declared in
:mod:`kinject.index.embedders`.

This module imports nothing of kinject at run time, so any package may import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kinject.finetune.augment import QAPair
    from kinject.finetune.registry import Activation
    from kinject.index.filters import SearchFilters
    from kinject.types import AdapterVersion, Chunk, Hit, TrainingExample

__all__ = ["AdapterSource", "BatchRetriever", "CorpusSource", "Generator", "Retriever",
           "Tokenizer"]


@runtime_checkable
class Retriever(Protocol):
    """Ranked chunks for a query: ``mode`` is ``hybrid``, ``vector`` or ``bm25``."""

    def search(self, query: str, k: int = 5, filters: SearchFilters | None = None,
               mode: str = "hybrid") -> list[Hit]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class BatchRetriever(Retriever, Protocol):
    """A Retriever that answers several queries in one call, one list of hits each."""

    def search_many(self, queries: Sequence[str], k: int = 5,
                    filters: SearchFilters | None = None,
                    mode: str = "hybrid") -> list[list[Hit]]: ...


@runtime_checkable
class Tokenizer(Protocol):
    """The parts of a transformers tokenizer kinject uses (counting, chat prompts, decoding)."""

    @property
    def pad_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None: ...

    @property
    def unk_token_id(self) -> int | None: ...

    @property
    def chat_template(self) -> str | None: ...  # None: the model has no chat template

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str: ...

    # The chat template's rendering: token ids (a list, or a dict with ``input_ids``)
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def convert_tokens_to_ids(self, tokens: str) -> Any: ...


@runtime_checkable
class Generator(Protocol):
    """A causal LM ready to write: ``rag.generate`` runs ``model.generate`` on ``device``
    with prompts from ``tokenizer``'s chat template."""

    @property
    def model(self) -> Any: ...  # a transformers / PEFT model (the library is untyped)

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def device(self) -> str: ...

    @property
    def name(self) -> str: ...


@runtime_checkable
class AdapterSource(Protocol):
    """The adapter versions serving reads: their manifests and files, the ACTIVE pointer."""

    def identity(self) -> str: ...

    def names(self) -> list[str]: ...

    def resolve(self, ref: str) -> str: ...

    def get(self, ref: str) -> AdapterVersion: ...

    def path(self, ref: str) -> Path: ...

    def active(self) -> str | None: ...

    def pointer_stamp(self) -> tuple[int, int] | None: ...

    def activate(self, ref: str | None, reason: str = "activated") -> Activation: ...


@runtime_checkable
class CorpusSource(Protocol):
    """The fine-tuning corpus as a cycle reads it: what arrived in which corpus cycle (and
    ``next_cycle``: close the current one, so what arrives from then on is the next's)."""

    def sources(self) -> set[str]: ...

    def next_cycle(self) -> int: ...

    def new_since(self, cycle: int) -> int: ...

    def examples(self, cycles: Iterable[int] | None = None,
                 exclude_sources: Iterable[str] = ()) -> list[TrainingExample]: ...

    def qa_pairs(self, cycles: Iterable[int] | None = None,
                 exclude_sources: Iterable[str] = ()) -> list[QAPair]: ...

    def chunks(self, cycles: Iterable[int] | None = None,
               exclude_sources: Iterable[str] = ()) -> list[tuple[Chunk, int]]: ...
