"""The two seams between fine-tuning and whatever carries adapter changes between replicas.

``finetune/`` never talks to a broker itself: whoever wires a process (the service, the CLI,
the stream runners) hands it an :class:`Announce` to tell the world that ACTIVE moved, and an
:data:`EventSubscription` that opens a feed of adapter events for the serving switcher.
``kinject.stream.adapter_events`` provides both for Kafka (``kinject.adapters``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kinject.finetune.registry import Activation


class Announce(Protocol):
    """Tell other replicas that ACTIVE changed. May raise; callers log and carry on (the
    pointer file is the truth, an announcement only says to look now)."""

    def __call__(self, change: Activation) -> None: ...


class AdapterEvents(Protocol):
    """An open feed of adapter events (decoded, oldest first)."""

    def poll(self, timeout_s: float) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


# Opened in the watcher's own thread, so a broker that is slow to answer never blocks start-up.
EventSubscription = Callable[[], AdapterEvents]
