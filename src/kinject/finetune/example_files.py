"""Training examples as JSON lines: a launched job's inputs, and what ``augment`` added (the
same on every rank)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kinject.types import TrainingExample

# (tokenizer, model) -> extra training examples, see LoraTrainer.train
Augment = Callable[[Any, Any], Sequence[TrainingExample]]


def write_examples(path: Path, examples: Sequence[TrainingExample]) -> Path:
    """Training examples as JSON lines (a job's inputs, what ``augment`` added)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    return path


def read_examples(path: Path) -> list[TrainingExample]:
    with path.open(encoding="utf-8") as f:
        return [TrainingExample(**json.loads(line)) for line in f if line.strip()]


def augment_once(augment: Augment, tok: Any, model: Any, path: Path, acc: Any
             ) -> list[TrainingExample]:
    """The examples ``augment`` adds, the same on every rank: the main process calls it and
    writes them to ``path``; the others wait and read that file (calling it themselves, they
    could sample other paraphrases, or none for a chunk deleted meanwhile, and their batches
    would no longer line up)."""
    if acc.is_main_process:
        write_examples(path, list(augment(tok, model)))
    acc.wait_for_everyone()
    return read_examples(path)
