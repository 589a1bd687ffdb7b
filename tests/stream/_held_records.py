"""Records that are slow by construction, for the tests of the ingest child's time budget.

The ingest worker reads each record in a child process started with ``spawn``: a fresh
interpreter, which a monkeypatch in the test process does not reach. The ``held_records``
fixture (tests/stream/conftest.py) puts ``_child_site/`` first on the ``PYTHONPATH`` those
children inherit; Python imports its ``sitecustomize`` at start-up, which calls
:func:`install` here. Nothing of this is in kinject: a production child never sees it.

Installed, ``ingest_record`` honours two meta keys before it reads a record for real:

* ``WAIT_FOR``: a path; the record is held until that file exists (a path never created
  holds it until the child is killed: longer than any budget, on any machine). After
  ``GIVE_UP_S`` the child raises instead, so a budget that never stops it fails the test
  rather than hanging it;
* ``HOLD_S``: seconds the record is held first (longer than a group's max_poll_interval);
* ``PROGRESS_S``: seconds the record reports progress first, as a long recording's
  transcription does (``kinject.ingest.audio.progress_hook``), then touches the file named
  by ``PROGRESSED`` (if any) and goes on to the holds above.

The meta travels with the record through the broker, so a test still goes through the real
producer, broker, worker and child.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

WAIT_FOR = "kinject_test_wait_for"
HOLD_S = "kinject_test_hold_s"
PROGRESS_S = "kinject_test_progress_s"
PROGRESSED = "kinject_test_progressed"
SITE_DIR = Path(__file__).parent / "_child_site"
# Far beyond any budget a test sets (seconds).
GIVE_UP_S = 60.0


def install() -> None:
    """Wrap this interpreter's ``kinject.ingest.pipeline.ingest_record`` (the child's loop
    looks it up when it starts) so that it honours ``WAIT_FOR`` and ``HOLD_S``."""
    from kinject.ingest import pipeline

    real = pipeline.ingest_record
    parent = os.getppid()

    def held(record: Any, config: Any = None) -> Any:
        progress_s = float(record.meta.get(PROGRESS_S) or 0.0)
        if progress_s:
            from kinject.ingest import audio

            start = time.monotonic()
            while (done := time.monotonic() - start) < progress_s:
                if audio.progress_hook is not None:
                    audio.progress_hook(done, progress_s)
                time.sleep(0.02)
            if record.meta.get(PROGRESSED):
                Path(record.meta[PROGRESSED]).touch()
        hold_s = float(record.meta.get(HOLD_S) or 0.0)
        gate = record.meta.get(WAIT_FOR)
        start = time.monotonic()
        while time.monotonic() - start < hold_s or (gate and not os.path.exists(gate)):
            if os.getppid() != parent:  # the test process is gone: do not linger
                os._exit(1)
            if time.monotonic() - start > max(GIVE_UP_S, hold_s):
                raise RuntimeError(f"{record.source_id} was held for {GIVE_UP_S:g} s and "
                                   f"no time budget stopped it (waiting for {gate})")
            time.sleep(0.02)
        return real(record, config)

    pipeline.ingest_record = held  # type: ignore[assignment]
