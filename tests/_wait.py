"""Waiting, in a test, for what another thread or process does: poll a condition until it
holds, and fail with what never happened once its deadline passes.

Importable from any test module as ``from _wait import until`` (pytest puts this folder on
``sys.path`` for tests/conftest.py). A deadline only bounds how long a broken build takes to
fail; no test passes or fails by how fast the machine is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(cond: Callable[[], T], timeout_s: float = 60.0, what: str = "the condition", *,
          why: Callable[[], str] | None = None, every_s: float = 0.05) -> T:
    """Call ``cond`` every ``every_s`` until it returns something true, and return that.

    After ``timeout_s`` an AssertionError names ``what`` (and ``why()``, the state that
    explains it, when given). An exception ``cond`` raises is not caught.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            detail = f"; {why()}" if why is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{detail}")
        time.sleep(every_s)
