"""Candidate answer spans inside a passage, for span-constrained answering.

The tiny default reader drifts when it writes freely (ENVIRONMENT.md), but it is good at
telling which of a few short spans of a sentence answers a question. So we cut the chosen
sentences into candidate spans (runs of content words, and their sub-runs; jieba words for
Chinese) and let the model's likelihood choose among them (``generate.score_continuations``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kinject.rag.sentences import _stem
from kinject.rag.topics import is_relation_word

_CJK = re.compile(r"[\u3400-\u9fff]")
# A word: letters/digits with inner ' & - . (Halcyon-Tern, 3.5, O'Brien); or one CJK run.
_EN_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'’.][A-Za-z0-9]+)*|&|[\u3400-\u9fff]+|[^\sA-Za-z0-9]")

# Words that never start or end an answer span, and that split content runs.
EN_STOP = frozenset("""
a an the and or but if of in on at to for from by with without into onto over under about
after before during since until while as than then so that this these those there here
is are was were be been being am has have had do does did will would shall should can could
may might must not no nor it its it's he she they them his her their hers him we our you your
i me my who whom whose which what when where why how all any both each few more most other
some such only own same too very just also now later where's what's who's
""".split())

# Chinese function words (jieba tokens) that split runs and never make an answer alone.
ZH_STOP = frozenset("""
的 了 在 于 和 与 及 是 为 被 把 从 向 到 对 将 就 都 也 又 并 而 或 其 这 那 他 她 它 他们
她们 我们 你 我 之 以 后 前 时 中 里 上 下 着 过 吗 呢 吧 啊 有 没有 那里 这里
由 自 至 往 跟 同 给 让 因 按 据 经 当 位于 曾 已 现在 如今 目前 后来
""".split())

_PUNCT = re.compile(r"^[\W_]+$")


@dataclass(frozen=True)
class Span:
    text: str
    sentence: int  # index of the sentence (passage) it comes from
    # The words around the span in its sentence (what it is "the X of"), for matching the
    # question: "was born in ~ in 1966" answers "What is the birthplace of ...?".
    context: str = ""


def _is_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def _tokens(sentence: str, protect: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Words of a sentence; ``protect``: names kept whole (jieba would cut "杨梓涵于" into
    "杨梓" and "涵于", leaving half a name looking like an answer)."""
    if not _is_cjk(sentence):
        return _EN_TOKEN.findall(sentence)
    import jieba

    jieba.setLogLevel(60)
    names = sorted((t for t in protect if _is_cjk(t)), key=len, reverse=True)
    if not names:
        return [t for t in jieba.lcut(sentence) if t.strip()]
    out: list[str] = []
    for piece in re.split("(" + "|".join(map(re.escape, names)) + ")", sentence):
        if piece in names:
            out.append(piece)
        elif piece:
            out += [t for t in jieba.lcut(piece) if t.strip()]
    return out


def _join(tokens: list[str]) -> str:
    out = ""
    for t in tokens:
        if out and not (_is_cjk(t) or _is_cjk(out[-1])) and t not in "'’":
            out += " "
        out += t
    return out


def _question_terms(question: str) -> set[str]:
    terms = {t.lower() for t in _tokens(question)}
    # and their stems: "counts" in the passage is the "count" the question asks with
    terms |= {f"~{w}" for w in _stem(sorted(t for t in terms if t.isalpha() and t.isascii()))}
    if _is_cjk(question):  # jieba may cut a name differently in the question and passage
        terms |= {question[i:i + 2] for i in range(len(question) - 1)
                  if _CJK.match(question[i]) and _CJK.match(question[i + 1])}
    return terms


def _stop(token: str) -> bool:
    low = token.lower()
    return (low in EN_STOP or token in ZH_STOP
            or (bool(_PUNCT.match(token)) and token not in "&+")
            # a relation word ("定居" in "1993年定居丽江") is what the value is, not the value;
            # but "学院" of "南湖学院" ends a name
            or (_is_cjk(token) and len(token) >= 2 and token not in _NAME_ENDS
                and is_relation_word(token, "zh")))


# Nouns that end an institution's name in Chinese, though alone they name a relation.
_NAME_ENDS = frozenset("大学 学院 学校 中学 小学 公司 总部 研究所 研究院 医院 出版社 书局 工厂 "
                       "博物馆 银行 集团 品牌".split())


def _in_question(token: str, terms: set[str]) -> bool:
    low = token.lower()
    if low in terms:
        return True
    if low.isalpha() and low.isascii() and low not in EN_STOP and f"~{_stem([low])[0]}" in terms:
        return True
    # A Chinese word that is a name in the question (王小明 vs 王小明于 cut differently).
    return _is_cjk(token) and len(token) >= 2 and any(
        token[i:i + 2] in terms for i in range(len(token) - 1))


_QUOTED = re.compile(r"[“「『\"]([^”」』\"\n]{1,40})[”」』\"]")


def candidate_spans(sentences: list[str], question: str, left: int = 3, right: int = 2,
                    protect: frozenset[str] | set[str] = frozenset()) -> list[Span]:
    """Spans that might answer ``question``: the maximal runs of content tokens of each
    sentence, minus anything the question says; each with the words around it. ``protect``:
    names (of the question) that are never cut."""
    terms = _question_terms(question)
    seen: set[str] = set()
    out: list[Span] = []
    for si, sentence in enumerate(sentences):
        # What a passage quotes is a name it gives ("a tea called “Mist Brow”"): a span whole.
        for m in _QUOTED.finditer(sentence):
            text = m.group(1).strip()
            if text and text.lower() not in seen and not _in_question(text, terms) \
                    and len(text) <= 40:
                seen.add(text.lower())
                out.append(Span(text, si, sentence[max(0, m.start() - 12):m.end() + 8].strip()))
        toks = _tokens(sentence, protect)
        runs: list[tuple[int, int]] = []
        start = None
        for i, t in enumerate(toks + ["."]):
            content = i < len(toks) and not (_stop(t) or _in_question(t, terms))
            if content and start is None:
                start = i
            elif not content and start is not None:
                runs.append((start, i))
                start = None
        for a, b in runs:
            text = _join(toks[a:b]).strip()
            if not text or text.lower() in seen or _PUNCT.match(text):
                continue
            seen.add(text.lower())
            out.append(Span(text, si, _join(toks[max(0, a - left):b + right]).strip()))
    return out
