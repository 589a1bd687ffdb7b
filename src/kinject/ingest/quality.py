"""Cleaning filters: how informative a text is, and optional PII redaction.

Informativeness is a TF-IDF-style density: the IDF-weighted mass of a text's distinct words,
with repeats damped, per token (punctuation counts as a token). Weights lie in [0, 1]:
- stop words and page furniture ("click", "here", "home", "首页", "版权所有") weigh 0;
- Chinese words weigh their IDF from jieba's table (``jieba/analyse/idf.txt``) over 12, the
  IDF of a rare word ("的" 0.07, "位于" 0.41, "灯塔" 0.77; words not in the table 1.0);
- English has no table here, so a word's length stands in for its rarity (Zipf: long words
  are rare): 0.3 + 0.1 per letter, at most 1 ("built" 0.8, "lighthouse" 1.0); numbers of
  three or more digits (years, amounts) 0.4, and one- or two-digit numbers (page numbers,
  list counters) 0.02.
score = sum over distinct words w(t) * (1 + ln tf(t)) / number of tokens.

Tables are information: the rules of a table drawn in text (box-drawing characters, ``|``,
``+-----+`` and ``=====`` lines) are not tokens, and a run of one punctuation mark counts
once. Without that, the borders of a real manual's tables (file descriptors, netmasks, date
formats) outnumbered their cells and whole tables were dropped as boilerplate.

Navigation bars, cookie banners, "Page 3 of 10" and runs of punctuation score 0.00-0.03;
a plain factual sentence scores 0.3-0.6 in either language (see tests). The default
threshold 0.05 sits just above the boilerplate and far below any sentence that states a
fact, so it drops furniture without risking knowledge: a text passes with as little as
one content word in about fifteen tokens.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from kinject.ingest.normalise import detect_lang

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.05
_IDF_RARE = 12.0
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_EN_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,:/-]\d+)*|[^\w\s]")

_EN_STOP = frozenset(
    """
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them then there these
they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yes ok okay us s t don't it's
click tap read view see show hide more home contact login log sign signin signup register
subscribe newsletter share tweet follow facebook twitter instagram linkedin youtube menu
search skip navigation nav next previous prev back top privacy policy terms conditions
cookie cookies accept settings copyright rights reserved page pages loading advertisement
sponsored download print email reply comment comments continue reading learn toggle close
main content sitemap faq help support blog posts post tags categories archive archives
news
""".split()
)
_ZH_STOP = frozenset(
    """
的 了 是 在 和 与 及 或 也 就 都 而 并 且 这 那 这个 那个 这些 那些 这里 那里 一个 我们 你们 他们
我 你 他 她 它 有 没有 不 很 被 把 从 对 为 以 之 其 等 着 过 吗 呢 吧 啊 呀 哦 请 您 将 还 又 更
点击 阅读 更多 首页 关于 关于我们 联系 联系我们 登录 注册 分享 返回 顶部 返回顶部 上一页 下一页
上一篇 下一篇 版权 版权所有 保留 所有 权利 隐私 政策 条款 订阅 加载 加载中 查看 详情 全文 评论
收藏 微信 微博 扫码 关注 免责声明 网站地图 导航 菜单 搜索 首 页 帮助 客服 广告 推荐 热门 相关
""".split()
)

# Page furniture that tokenizers split into innocent-looking words ("上一页" -> "上", "一页");
# each occurrence becomes one weightless token before tokenizing.
_FURNITURE = re.compile(
    "|".join(
        re.escape(p)
        for p in sorted(
            """上一页 下一页 上一篇 下一篇 返回顶部 返回首页 阅读更多 阅读全文 查看更多 加载更多
            点击这里 点击查看 版权所有 保留所有权利 扫一扫 扫码关注 关注我们 微信公众号 分享到
            本站所有文章 转载请注明出处 仅供参考 免责声明 网站地图 联系我们 关于我们""".split(),
            key=len,
            reverse=True,
        )
    )
    + r"|\b(?:[Tt]erms of [Uu]se|[Aa]ll [Rr]ights [Rr]eserved|[Pp]owered by)\b"
    # A whole copyright notice, owner included, then a bare "© 2023".
    + r"|(?:[Cc]opyright|©|\([Cc]\))[^\n]{0,80}?(?:[Aa]ll [Rr]ights [Rr]eserved|保留所有权利)"
    + r"|(?:©|\([Cc]\)|[Cc]opyright)\s*(?:©\s*)?\d{4}(?:\s*[-–]\s*\d{4})?"
)
_FURNITURE_TOKEN = " \u00b6 "
# A table's rules: box-drawing characters and column bars are no tokens; a run of the same
# mark ("-----", "=====", "....") is one.
_TABLE_RULES = re.compile(r"[\u2500-\u257f|]+")
_MARK_RUN = re.compile(r"([^\w\s])\1+")

_jieba_lock = threading.Lock()
_jieba_ready = False


def _jieba_cut(text: str) -> list[str]:
    """jieba tokens; the dictionary (shipped inside the package) loads once, quietly."""
    global _jieba_ready
    with warnings.catch_warnings():  # jieba 0.42 has invalid escapes in its regexes
        warnings.simplefilter("ignore", DeprecationWarning)
        import jieba

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading at DEBUG
                jieba.initialize()
                _jieba_ready = True
    return [t for t in jieba.lcut(text) if t.strip()]


@lru_cache(maxsize=1)
def _zh_idf() -> dict[str, float]:
    import jieba

    path = Path(jieba.__file__).parent / "analyse" / "idf.txt"
    table: dict[str, float] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            word, _, value = line.rstrip("\n").partition(" ")
            if value:
                table[word] = float(value)
    log.debug("loaded %d jieba IDF values from %s", len(table), path)
    return table


def tokenize(text: str, lang: str | None = None) -> list[str]:
    """Words, numbers and punctuation marks: jieba for Chinese and mixed text, a regex else."""
    lang = lang or detect_lang(text)
    text = _MARK_RUN.sub(r"\1", _TABLE_RULES.sub(" ", text))
    text = _FURNITURE.sub(_FURNITURE_TOKEN, text)
    return _EN_TOKEN.findall(text) if lang == "en" else _jieba_cut(text)


def _weight(token: str) -> float:
    """A token's IDF-style weight in [0, 1] (0 for punctuation, stop words, page furniture)."""
    if not any(c.isalnum() for c in token):
        return 0.0
    low = token.lower()
    if low in _EN_STOP or token in _ZH_STOP:
        return 0.0
    if _CJK.search(token):
        return min(1.0, _zh_idf().get(token, _IDF_RARE) / _IDF_RARE)
    digits = sum(c.isdigit() for c in token)
    if digits:
        return 0.4 if digits >= 3 else 0.02
    return min(1.0, 0.3 + 0.1 * len(token))


def informativeness(text: str, lang: str | None = None) -> float:
    """TF-IDF-style information density of ``text`` in [0, 1]; see the module docstring.

    ``lang`` is "zh", "en" or "mixed" (detected when None).
    """
    tokens = tokenize(text, lang)
    if not tokens:
        return 0.0
    counts = Counter(t.lower() if t.isascii() else t for t in tokens)
    mass = sum(_weight(t) * (1.0 + math.log(tf)) for t, tf in counts.items())
    return min(1.0, mass / len(tokens))


def is_low_information(
    text: str, lang: str | None = None, threshold: float = DEFAULT_THRESHOLD
) -> bool:
    """True when ``text`` is boilerplate or noise worth dropping (score below ``threshold``)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return informativeness(text, lang) < threshold


# --- PII redaction ----------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CN_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
# 4-4-4-4(-1..3), Amex/Diners 4-6-5 and 4-6-4, or 13-19 digits in one run.
_CARD = re.compile(
    r"(?<![\d-])(?:[2-6]\d{3}(?:[ -]\d{4}){3}(?:[ -]?\d{1,3})?|3\d{3}[ -]\d{6}[ -]\d{4,5}"
    r"|[2-6]\d{12,18})(?![\d-])"
)
_PHONES = (
    # Chinese mobile, with or without +86: 13812345678, +86 138 1234 5678
    re.compile(r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)"),
    # International: + country code, then groups: +44 20 7946 0958, +1 (415) 555-0132
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"),
    # US / NANP: (415) 555-0132, 415-555-0132, 415.555.0132
    re.compile(r"(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4}(?!\d)"),
    # Chinese landline with area code: 010-12345678, 0755-1234567
    re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"),
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _valid_cn_id(number: str) -> bool:
    """The GB 11643 checksum of an 18-character resident ID."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card_number(text: str) -> bool:
    """A Luhn-valid number with a card network's prefix and length (Visa, Mastercard, Amex,
    Diners, Discover/UnionPay), so timestamps and order numbers are not taken for cards."""
    d = re.sub(r"\D", "", text)
    n = len(d)
    if d[0] == "4":
        fits = n in (13, 16, 19)
    elif "51" <= d[:2] <= "55" or "2221" <= d[:4] <= "2720":
        fits = n == 16
    elif d[:2] in ("34", "37"):
        fits = n == 15
    elif d[:2] in ("30", "36", "38", "39"):
        fits = n == 14
    else:
        fits = d[0] == "6" and 16 <= n <= 19
    return fits and _luhn(d)


def _phone_number(text: str) -> bool:
    return 7 <= sum(c.isdigit() for c in text) <= 15


# Emails first (their digits are no phone), then IDs and cards before the looser phone forms.
_RULES: tuple[tuple[re.Pattern[str], str, Callable[[str], bool]], ...] = (
    (_EMAIL, "[EMAIL]", bool),
    (_CN_ID, "[ID]", _valid_cn_id),
    (_CARD, "[CARD]", _card_number),
    *((phone, "[PHONE]", _phone_number) for phone in _PHONES),
)


def redact_pii(text: str) -> tuple[str, int]:
    """Replace emails, Chinese resident ID numbers, card numbers and phone numbers with
    [EMAIL], [ID], [CARD] and [PHONE]; returns the text and how many were replaced.

    ID numbers must pass their checksum and card numbers the Luhn check with a card network's
    prefix and length, so order numbers and timestamps are left alone.
    """
    count = 0
    for pattern, label, valid in _RULES:
        found = [m for m in pattern.finditer(text) if valid(m.group())]
        for m in reversed(found):
            text = text[: m.start()] + label + text[m.end() :]
        count += len(found)
    return text, count
