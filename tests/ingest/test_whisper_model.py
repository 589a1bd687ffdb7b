"""Whisper base assembled into the shared models dir under the same lock as every other model
conversion there (kinject.models.conversion_lock)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from kinject.ingest import whisper_model
from kinject.models import conversion_lock


def test_whisper_base_waits_for_another_assembly_and_uses_its_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker (thread or process) assembling Whisper base holds the models dir's
    conversion lock: this one assembled a second 145 MB copy beside it all the same. Now it
    waits for the lock and uses the copy it finds."""
    assembling = threading.Event()

    def pieces() -> None:  # reached only when this worker starts assembling a copy itself
        assembling.set()
        return None

    monkeypatch.setattr(whisper_model, "base_pieces", pieces)
    got: dict[str, Any] = {}

    def worker() -> None:
        try:
            got["path"] = whisper_model.assemble_base(tmp_path)
        except Exception as exc:  # reported by the assertion below
            got["error"] = exc

    target = tmp_path / whisper_model.BASE_KEY
    with conversion_lock(tmp_path, whisper_model.BASE_KEY):
        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        # A bound, not a measure: the unlocked worker gets there at once.
        assert not assembling.wait(3), "assembled while another assembly held the lock"
        target.mkdir()
        (target / "model.bin").write_bytes(b"the other worker's checked copy")
    thread.join(60)
    assert got == {"path": target}
