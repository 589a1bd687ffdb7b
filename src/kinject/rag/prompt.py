"""Prompts with fenced, numbered passages: defined in :mod:`kinject.prompting` (shared with
fine-tuning, whose RAFT examples train the reader in this very prompt), re-exported here."""

from __future__ import annotations

from kinject.prompting import (
    CLOSED_BOOK_SYSTEM_PROMPT,
    FENCE_CLOSE,
    FENCE_OPEN,
    FREE_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    Messages,
    closed_book_messages,
    fence,
    numbered_passages,
    rag_messages,
    reader_prompt,
)

__all__ = ["CLOSED_BOOK_SYSTEM_PROMPT", "FENCE_CLOSE", "FENCE_OPEN", "FREE_SYSTEM_PROMPT",
           "SYSTEM_PROMPT", "Messages", "closed_book_messages", "fence", "numbered_passages",
           "rag_messages", "reader_prompt"]
