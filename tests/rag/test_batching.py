"""Dynamic batching: callers that arrive while a batch runs join the next one, each gets its
own result, and no call exceeds max_batch."""

import threading
import time
from collections.abc import Sequence

from kinject.rag.batching import MicroBatcher


def test_callers_arriving_during_a_batch_join_the_next_one() -> None:
    sizes: list[int] = []

    def run(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.05)  # a model call: others arrive meanwhile
        return [i * 2 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_ms=5, max_batch=8)
    out: dict[int, int] = {}

    def ask(i: int) -> None:
        out[i] = batcher.submit(i)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == {i: 2 * i for i in range(40)}
    assert max(sizes) <= 8 and sum(sizes) == 40
    assert len(sizes) <= 10  # 40 callers in a few full batches, not 40 calls
