"""BM25 tokens: Chinese by jieba (Traditional characters folded to Simplified), other text
lower-cased, stemmed, without stopwords, with case-exact tokens where case tells words apart
(``-L`` vs ``-l``)."""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_SPLIT_RE = re.compile(rf"([{_CJK}]+)")
# Words, and codes whose parts are joined by - _ . / (kept whole and as parts).
_WORD_RE = re.compile(r"[^\W_]+(?:[-_./][^\W_]+)*")
_PART_RE = re.compile(r"[^\W_]+")

_tok_lock = threading.Lock()
_tok_state: dict[str, Any] = {}


def _tools() -> dict[str, Any]:
    with _tok_lock:
        if not _tok_state:
            import jieba
            import Stemmer
            from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN
            from opencc import OpenCC

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _tok_state.update(
                jieba=jieba,
                stem=Stemmer.Stemmer("english").stemWord,
                # Traditional -> Simplified, character by character and by phrase (OpenCC's
                # t2s): the same word in either script is one token, so a question typed in
                # Simplified finds a Traditional page, and Whisper's Mandarin transcripts,
                # which come in either script at its whim, are found at all.
                t2s=OpenCC("t2s").convert,
                stop_en=frozenset(STOPWORDS_EN),
                stop_zh=frozenset(STOPWORDS_CHINESE),
            )
        return _tok_state


# What ``tokenize`` makes; a saved index of another version is rebuilt from the docstore at
# load (2: case-exact tokens were added; 3: Traditional Chinese folded to Simplified).
TOKENIZER_VERSION = 3
# Case-exact tokens carry this mark, so they never meet a folded token ("=L" vs "l").
CASE_MARK = "="


def _case_token(part: str) -> str | None:
    """The case-exact token of a word part whose case tells it apart (``-L`` vs ``-l``,
    ``PATH``, ``getElementById``): a single letter in either case, or a word with a capital
    past its first letter. Lower-case and Title-case words fold as before and get none, so
    ordinary prose and a sentence's first word are tokenised as they always were."""
    if len(part) == 1:
        return CASE_MARK + part if part.isalpha() else None
    if any(ch.isupper() for ch in part[1:]):
        return CASE_MARK + part
    return None


def tokenize(text: str) -> list[str]:
    """BM25 tokens: Chinese runs folded to Simplified characters and cut by jieba (search mode:
    words and their sub-words), other text as lower-cased, stemmed words without English
    stopwords. A code such as ``XK-4471`` is kept whole (``xk-4471``) and as its parts. A part
    whose case tells it apart also gets a case-exact token (:func:`_case_token`), so
    ``dpkg -L`` matches the ``-L`` row better than the ``-l`` one while ``dpkg -l`` still
    finds both."""
    tools = _tools()
    stem, stop_en, stop_zh = tools["stem"], tools["stop_en"], tools["stop_zh"]
    out: list[str] = []
    for i, piece in enumerate(_SPLIT_RE.split(text)):
        if not piece:
            continue
        if i % 2:  # a CJK run
            out += [w for w in tools["jieba"].cut_for_search(tools["t2s"](piece))
                    if w.strip() and w not in stop_zh]
            continue
        for word in _WORD_RE.findall(piece):
            parts = _PART_RE.findall(word)
            if len(parts) > 1:
                out.append(word.lower())
            for part in parts:
                if (exact := _case_token(part)) is not None:
                    out.append(exact)
                p = part.lower()
                if p in stop_en:
                    continue
                out.append(stem(p) if p.isalpha() else p)
    # Interned: the index keeps every chunk's tokens for rebuilds; words repeat a lot.
    return [sys.intern(t) for t in out]
