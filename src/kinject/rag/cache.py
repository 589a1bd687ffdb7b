"""An LRU cache of answers, keyed by everything that can change an answer."""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Hashable

from kinject.types import Answer


def normalise_question(question: str) -> str:
    """Case, width and spacing do not change a question (``Who is X?`` == ``who  is x ?``)."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return " ".join(text.replace("?", " ?").split()).rstrip(" ?")


class AnswerCache:
    """Thread-safe LRU of ``Answer``s. ``size=0`` turns it off."""

    def __init__(self, size: int = 256) -> None:
        if size < 0:
            raise ValueError(f"answer cache size must be >= 0, got {size}")
        self.size = size
        self._items: OrderedDict[Hashable, Answer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Answer | None:
        if not self.size:
            return None
        with self._lock:
            answer = self._items.get(key)
            if answer is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return answer

    def put(self, key: Hashable, answer: Answer) -> None:
        if not self.size:
            return
        with self._lock:
            self._items[key] = answer
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
