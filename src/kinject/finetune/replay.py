"""ReplayBuffer: a durable reservoir sample of earlier examples, mixed into later cycles.

Reservoir sampling (Vitter's algorithm R) keeps a uniform sample of every example ever
offered in ``capacity`` slots, whatever the number offered. The slots and the count live in
the corpus store's SQLite file, so the sample survives restarts, and a deleted source leaves
the reservoir with its examples (:meth:`CorpusStore.remove_source`). The random choices are
derived from ``(seed, n)``, so a replay of the same offers gives the same reservoir.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

from kinject.finetune.corpus import CorpusStore
from kinject.types import TrainingExample

log = logging.getLogger(__name__)


class ReplayBuffer:
    def __init__(self, store: CorpusStore, capacity: int = 2000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.store = store
        self.capacity = capacity
        self.seed = seed

    @property
    def seen(self) -> int:
        """How many examples were ever offered."""
        with self.store._lock:
            return int(self.store._get("replay_seen", "0"))

    def __len__(self) -> int:
        with self.store._lock:
            return int(self.store._db.execute("SELECT COUNT(*) FROM replay").fetchone()[0])

    def offer(self, examples: Iterable[TrainingExample]) -> int:
        """Offer examples to the reservoir (a cycle's examples after it trained); an example
        offered before is skipped. Returns how many entered it."""
        entered = 0
        with self.store.transaction() as db:
            n = int(self.store._get("replay_seen", "0"))
            used = {int(r[0]) for r in db.execute("SELECT slot FROM replay")}
            free = sorted(set(range(self.capacity)) - used, reverse=True)
            for ex in examples:
                if db.execute("INSERT OR IGNORE INTO replay_offered VALUES(?)",
                              (ex.example_id,)).rowcount == 0:
                    continue  # offered before (held or not): once only, or it is not uniform
                n += 1
                if free:
                    slot = free.pop()
                else:
                    slot = random.Random(f"{self.seed}:{n}").randrange(n)
                    if slot >= self.capacity:
                        continue
                db.execute("INSERT INTO replay(slot, example_id) VALUES(?, ?) ON CONFLICT(slot) "
                           "DO UPDATE SET example_id=excluded.example_id", (slot, ex.example_id))
                entered += 1
            self.store._set(db, "replay_seen", str(n))
        return entered

    def catch_up(self, through_cycle: int) -> int:
        """Offer every stored example of corpus cycles up to ``through_cycle`` that was never
        offered. A promoted cycle offers its examples itself; an adapter activated by hand
        (``kinject adapters activate`` on a rejected version) or a crash between promotion
        and the offer would otherwise leave its data out of every later cycle's replay. It
        remembers how far it got, so a call with nothing new reads nothing. Returns how many
        entered the reservoir."""
        with self.store._lock:
            done = int(self.store._get("replay_through", "0"))
        if through_cycle <= done:
            return 0
        entered = self.offer(self.store.examples(cycles=range(done + 1, through_cycle + 1)))
        with self.store.transaction() as db:
            self.store._set(db, "replay_through", str(through_cycle))
        if entered:
            log.info("replay: %d example(s) of cycles %d..%d entered the reservoir late",
                     entered, done + 1, through_cycle)
        return entered

    def examples(self, exclude_sources: Iterable[str] = ()) -> list[TrainingExample]:
        """Everything in the reservoir (in slot order)."""
        with self.store._lock:
            ids = [r[0] for r in self.store._db.execute(
                "SELECT example_id FROM replay ORDER BY slot")]
        excluded = set(exclude_sources)
        return [e for e in self.store.examples_by_id(ids) if e.source_id not in excluded]

    def sample(self, k: int, seed: int | None = None,
               exclude_sources: Iterable[str] = ()) -> list[TrainingExample]:
        """``k`` examples drawn from the reservoir without replacement (all when fewer)."""
        pool = self.examples(exclude_sources)
        rng = random.Random(self.seed if seed is None else seed)
        return rng.sample(pool, min(k, len(pool)))
