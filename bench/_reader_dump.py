"""``--dump-reader FILE`` of the answer benches: the reader reads every question's best unit,
its bar aside (``ReaderConfig.probe``), and each question's signals and raw reading go to FILE
as JSON lines, for ``bench/fit_abstain.py``. The answers served are then the reader's with no
abstention of its own (the bench's figures say what that costs); the fit joins FILE with the
bench's per-question CSV by question text."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any


class _Dump(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        sig = getattr(record, "reader_signals", None)
        if sig is not None:
            self.file.write(json.dumps(sig, ensure_ascii=False) + "\n")
            self.file.flush()


def install(path: Path) -> None:
    """Every Ct2Reader made in this process from now on probes, and its signals go to path."""
    from kinject.rag import reader as reader_mod

    init = reader_mod.Ct2Reader.__init__

    def probing(self: Any, loaded: Any, config: Any = None) -> None:
        init(self, loaded, replace(config or reader_mod.ReaderConfig(), probe=True))

    reader_mod.Ct2Reader.__init__ = probing  # type: ignore[method-assign]
    log = logging.getLogger(reader_mod.__name__)
    log.setLevel(logging.DEBUG)
    log.addHandler(_Dump(path))
