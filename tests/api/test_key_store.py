"""The keys file under concurrent writers: `kinject keys create` run several times at once
(separate processes, each with its own KeyStore) on one data dir."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from kinject.api.auth import KEYS_FILE, KeyStore

PROCESSES = 4
KEYS_EACH = 8


def _create_keys(path: str, who: int, start: multiprocessing.synchronize.Event,
                 out: multiprocessing.Queue[str]) -> None:
    store = KeyStore(Path(path))
    start.wait(60)
    for n in range(KEYS_EACH):
        out.put(store.create(f"writer-{who}-{n}", "write")[1])


def test_keys_created_at_once_by_several_processes_are_all_kept(tmp_path: Path) -> None:
    """Each `kinject keys create` read the file, added its key and wrote the file back: one
    that wrote meanwhile lost its key (printed to its user, refused by the server)."""
    path = tmp_path / KEYS_FILE
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_create_keys, args=(str(path), i, start, out))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    printed = [out.get(timeout=10) for _ in range(PROCESSES * KEYS_EACH)]
    store = KeyStore(path)
    assert len(store.keys()) == PROCESSES * KEYS_EACH
    assert all(store.authenticate(key) is not None for key in printed)
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind
