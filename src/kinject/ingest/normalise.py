"""Text normalisation and language detection, shared by every parser."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

Lang = Literal["zh", "en", "mixed"]

# Chinese full-width punctuation is the proper form in Chinese text; NFKC would turn it into
# ASCII ("，" -> ","), so it is kept as is while everything else is NFKC-normalised.
_KEEP_FULLWIDTH = "，！？；：（）"
_KEEP_SPLIT = re.compile(f"([{_KEEP_FULLWIDTH}])")
# Zero-width characters, BOMs and C0/C1 controls other than tab and newline.
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")

# CJK Unified Ideographs, extension A, compatibility ideographs.
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_CJK_OR_PUNCT = f"[{_CJK}\u3000-\u303f\uff00-\uffef]"
_SPACE_BETWEEN_CJK = re.compile(f"(?<={_CJK_OR_PUNCT})[^\\S\\n]+(?={_CJK_OR_PUNCT})")


def normalise_text(text: str) -> str:
    """NFKC (keeping Chinese full-width punctuation), no invisible characters, tidy spacing.

    Runs of spaces and tabs become one space, lines are stripped, and runs of blank lines
    become one blank line, so paragraph breaks survive for the chunker.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(
        part if part and part in _KEEP_FULLWIDTH else unicodedata.normalize("NFKC", part)
        for part in _KEEP_SPLIT.split(text)
    )
    text = _INVISIBLE.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def remove_cjk_spaces(text: str) -> str:
    """Drop the spaces OCR engines put between Chinese characters ("灯 塔" -> "灯塔")."""
    return _SPACE_BETWEEN_CJK.sub("", text)


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among CJK characters plus Latin words (0.0 for neither).

    Latin is counted by words, not letters: one Chinese character carries about as much
    as one English word, so a Chinese text quoting "Python 3.11" is still Chinese.
    """
    cjk = len(_CJK_CHAR.findall(text))
    words = len(_LATIN_WORD.findall(text))
    total = cjk + words
    return cjk / total if total else 0.0


def detect_lang(text: str) -> Lang:
    """``"zh"`` for mostly Chinese text, ``"en"`` for mostly Latin (or empty), else ``"mixed"``."""
    ratio = cjk_ratio(text)
    if ratio >= 0.8:
        return "zh"
    if ratio <= 0.2:
        return "en"
    return "mixed"
