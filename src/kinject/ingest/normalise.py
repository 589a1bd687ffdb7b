"""Text normalisation and language detection, shared by every parser."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from kinject.ingest.codeblocks import split_code

Lang = Literal["zh", "en", "mixed"]

# Chinese punctuation is the proper form inside Chinese text, so it is kept there; next to
# Latin text it becomes its half-width form (NFKC alone would turn "，" into "," everywhere,
# and would leave "。" and "、" alone everywhere).
_CHINESE_PUNCT = {
    "，": ",", "！": "!", "？": "?", "；": ";", "：": ":", "（": "(", "）": ")",
    "。": ".", "、": ",", "…": "...",
}  # fmt: skip
_KEEP_FULLWIDTH = "".join(_CHINESE_PUNCT)
_KEEP_SPLIT = re.compile(f"([{_KEEP_FULLWIDTH}])")
# Half-width punctuation that takes a space before a following Latin letter ("a，b" -> "a, b").
_SPACE_AFTER = frozenset(",!?;:.")
# How far to look either side of a punctuation mark for the text it belongs to.
_CONTEXT_WINDOW = 40
# Zero-width characters, BOMs and C0/C1 controls other than tab and newline.
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# Stands for a code block while the prose around it is tidied (private use: no text has it).
_CODE_SLOT = "\ue000kinject-code\ue000"

# CJK Unified Ideographs, extension A, compatibility ideographs.
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
# Chinese characters plus Japanese kana: scripts whose text uses full-width punctuation.
_FULLWIDTH_SCRIPT = re.compile(f"[{_CJK}\u3040-\u30ff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_CJK_OR_PUNCT = f"[{_CJK}\u3000-\u303f\uff00-\uffef]"
_SPACE_BETWEEN_CJK = re.compile(f"(?<={_CJK_OR_PUNCT})[^\\S\\n]+(?={_CJK_OR_PUNCT})")


def normalise_text(text: str) -> str:
    """NFKC, full-width forms to half-width outside Chinese text, no invisible characters,
    tidy spacing.

    Full-width letters and digits become ASCII everywhere ("２０２３年" -> "2023年"); Chinese
    punctuation stays full-width where it sits in Chinese text and becomes half-width next to
    Latin text ("Hello，world！" -> "Hello, world!"). Runs of spaces and tabs become one space,
    lines are stripped, and runs of blank lines become one blank line, so paragraph breaks
    survive for the chunker.

    Fenced code blocks (:mod:`kinject.ingest.codeblocks`) are kept as they are, but for
    invisible characters and trailing spaces: their indentation and runs of spaces matter.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = split_code(text)
    if len(parts) == 1 and not parts[0][0]:
        return _tidy(text)
    code = [_tidy_code(part) for is_code, part in parts if is_code]
    slotted = "".join(_CODE_SLOT if is_code else part.replace(_CODE_SLOT, "")
                      for is_code, part in parts)
    pieces = _tidy(slotted).split(_CODE_SLOT)
    out = [pieces[0]]
    for block, rest in zip(code, pieces[1:], strict=True):
        out += [block, rest]
    return "".join(out)


def _tidy_code(code: str) -> str:
    """A code block as written, less invisible characters and trailing spaces (a no-break
    space, as HTML indents with, is a space)."""
    code = _INVISIBLE.sub("", code).replace("\u00a0", " ")
    return "\n".join(line.rstrip() for line in code.split("\n"))


def _tidy(text: str) -> str:
    text = "".join(
        part if part and part in _CHINESE_PUNCT else unicodedata.normalize("NFKC", part)
        for part in _KEEP_SPLIT.split(text)
    )
    text = _INVISIBLE.sub("", text)
    text = _KEEP_SPLIT.sub(lambda m: _punct_in_context(m.string, m.start()), text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _nearest_letter(text: str, start: int, step: int) -> str:
    """The first letter, digit or ideograph from ``start`` going ``step`` on the same line,
    or "" when there is none within reach."""
    i = start
    for _ in range(_CONTEXT_WINDOW):
        if not 0 <= i < len(text) or text[i] == "\n":
            return ""
        if text[i].isalnum():
            return text[i]
        i += step
    return ""


def _punct_in_context(text: str, i: int) -> str:
    """Keep the Chinese punctuation mark at ``text[i]`` where it belongs to Chinese text.

    It belongs there when the nearest letter on either side is Chinese, or when one side has
    no letter (the end of a sentence) and the line around it holds Chinese ("约45 USD。").
    A mark with no letter on either side is left as it is.
    """
    char = text[i]
    left, right = _nearest_letter(text, i - 1, -1), _nearest_letter(text, i + 1, 1)
    if not left and not right:
        return char
    if _FULLWIDTH_SCRIPT.match(left) or _FULLWIDTH_SCRIPT.match(right):
        return char
    if not left or not right:
        reach = 2 * _CONTEXT_WINDOW
        lo = max(text.rfind("\n", 0, i) + 1, i - reach)
        hi = text.find("\n", i, i + reach)
        if _FULLWIDTH_SCRIPT.search(text, lo, hi if hi >= 0 else i + reach):
            return char
    half = _CHINESE_PUNCT[char]
    before, after = text[i - 1 : i], text[i + 1 : i + 2]
    if half == "(" and before.isascii() and before.isalnum():
        return " ("
    if half[-1] in _SPACE_AFTER and after.isascii() and after.isalpha():
        return half + " "
    return half


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
