"""What the session's model fixtures converted in this run (tests/conftest.py fills it)."""

from __future__ import annotations

from pathlib import Path

# The default reader's folder when ``reader_cache`` converted it in this run (a fresh clone,
# CI): the conversion test then checks that conversion instead of making a second one.
READER_CONVERTED: list[Path] = []
