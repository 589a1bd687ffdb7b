"""Question sets: JSON Lines, one question a line.

A row is an object with ``question`` (a non-empty string) and ``reference`` (the expected
answer; ``""`` or ``null`` means the right thing is to abstain), and optionally ``sources``
(the source ids the answer should cite; ``reference_sources`` is accepted as well, and
``answer`` for ``reference``),
``language`` (``en`` or ``zh``; detected from the text when absent) and ``id``. Blank lines
and lines starting with ``#`` are skipped.

A set with any bad row is refused whole, with every bad line named: an evaluation that
gates a deployment must not pass on a silently smaller set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinject.errors import KinjectError

LANGUAGES = ("en", "zh")
_KEYS = {"id", "question", "reference", "answer", "sources", "reference_sources", "language"}


class EvalSetError(KinjectError):
    """A question set cannot be read; the message names each bad line."""

    code = "bad_eval_set"


@dataclass(frozen=True)
class EvalItem:
    line: int
    question: str
    reference: str | None  # None: the right answer is to abstain
    sources: tuple[str, ...] = ()
    language: str | None = None
    id: str | None = None

    @property
    def expects_abstention(self) -> bool:
        return self.reference is None


def _item(line: int, row: Any) -> EvalItem:
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    unknown = set(row) - _KEYS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; fields are {sorted(_KEYS)}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    if "reference" not in row and "answer" not in row:
        raise ValueError("'reference' is missing (use \"\" or null where the right thing is "
                         "to abstain)")
    reference = row.get("reference", row.get("answer"))
    if reference is not None and not isinstance(reference, str):
        raise ValueError(f"'reference' must be a string or null, got {reference!r}")
    sources = row.get("sources", row.get("reference_sources")) or []
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise ValueError("'sources' must be a list of source ids (non-empty strings)")
    lang = row.get("language")
    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"'language' must be one of {LANGUAGES}, got {lang!r}")
    ident = row.get("id")
    return EvalItem(line=line, question=question.strip(),
                    reference=reference.strip() if reference and reference.strip() else None,
                    sources=tuple(dict.fromkeys(sources)), language=lang,
                    id=None if ident is None else str(ident))


def parse_lines(lines: Iterable[str], name: str = "<set>") -> list[EvalItem]:
    """The items of a JSONL question set; raises EvalSetError naming every bad line."""
    items: list[EvalItem] = []
    errors: list[str] = []
    for n, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            items.append(_item(n, json.loads(text)))
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            errors.append(f"{name}:{n}: {exc}")
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise EvalSetError(f"{len(errors)} bad row(s), nothing was run:\n" + "\n".join(shown))
    if not items:
        raise EvalSetError(f"{name} holds no question")
    return items


def load_set(path: Path) -> list[EvalItem]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is no row
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"cannot read {path}: {exc}") from exc
    # "\n" only: str.splitlines also splits at U+2028, U+0085, ... which JSON allows raw
    return parse_lines(text.split("\n"), str(path))
