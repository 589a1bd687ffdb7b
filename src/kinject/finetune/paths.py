"""Where fine-tuning keeps its files under the data dir."""

from __future__ import annotations

from pathlib import Path

CORPUS_FILE = "corpus.sqlite3"


def finetune_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "finetune"


def corpus_path(data_dir: Path) -> Path:
    """Where the corpus materialiser keeps the corpus and where cycles read it."""
    return Path(data_dir) / "corpus" / CORPUS_FILE
