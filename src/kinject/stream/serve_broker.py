"""Where a running ``kinject serve`` keeps its embedded broker, for the commands beside it.

``kinject serve`` with no bootstrap servers starts an embedded broker on a free port. A user
who then runs ``kinject publish`` on the same data dir (the README's road: serve, then
publish) would otherwise be told that no broker is configured. So serve writes a note,
``<data dir>/serve_broker.json`` (the address and serve's pid), while the broker runs, and
the publishing commands use that address when no bootstrap servers are configured. A note
whose process is gone (a serve killed with -9) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kinject.config import Settings

log = logging.getLogger(__name__)

NOTE_FILE = "serve_broker.json"


@contextmanager
def announce(data_dir: Path, bootstrap: str) -> Iterator[Path]:
    """Write the note for the life of the block (atomically: a reader never sees half of
    it); remove it afterwards unless another serve has replaced it meanwhile."""
    note = data_dir / NOTE_FILE
    body = json.dumps({"bootstrap": bootstrap, "pid": os.getpid()})
    tmp = note.with_name(f".{NOTE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, note)
    try:
        yield note
    finally:
        try:
            if note.read_text(encoding="utf-8") == body:
                note.unlink()
        except OSError:
            pass


def running_serve_broker(data_dir: Path) -> tuple[str, int] | None:
    """(address, pid) of the embedded broker a live ``kinject serve`` on ``data_dir`` runs,
    or None (no note, an unreadable one, or its process has ended)."""
    try:
        note = json.loads((data_dir / NOTE_FILE).read_text(encoding="utf-8"))
        bootstrap, pid = str(note["bootstrap"]), int(note["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return (bootstrap, pid) if bootstrap else None


def with_serve_broker(settings: Settings) -> Settings:
    """``settings`` with the running serve's embedded broker as bootstrap servers when none
    are configured and such a serve runs on this data dir; otherwise ``settings`` as is."""
    if settings.kafka.bootstrap_servers:
        return settings
    found = running_serve_broker(settings.data_dir)
    if found is None:
        return settings
    bootstrap, pid = found
    log.info("publishing to the embedded broker of kinject serve (pid %d) on %s", pid,
             bootstrap)
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    return settings.model_copy(update={"kafka": kafka})
