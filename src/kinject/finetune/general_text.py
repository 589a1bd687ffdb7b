"""General text, English and Chinese: replayed in training, and the gate's perplexity measure.

Mixed into every cycle at ``general_ratio`` (so the adapter keeps the model's general
language ability while it absorbs new facts); the held-out part is what the gate measures
general-text perplexity on. The two parts never overlap, and they are split by document:
the held-out paragraphs come from pages and chapters training never sees a line of.

The shipped corpus, ``data/general_text.jsonl.gz`` (built by ``bench/build_general_text.py``
from two Debian packages; nothing is downloaded at run time):

- English, 800 prose paragraphs of the Python 3.11 documentation (Debian ``python3.11-doc``),
  558 to train on and 242 held out. Copyright 2001-2023 Python Software Foundation, PSF License
  Agreement version 2.
- Chinese (Simplified), 243 prose paragraphs of Osamu Aoki's "Guide for Debian Maintainers" in
  its zh-cn translation (Debian ``debmake-doc``), 142 to train on and 101 held out. Copyright
  2014-2021 Osamu Aoki and its translators, Expat (MIT) licence.

Both licences allow shipping the text inside kinject; their notices, and what was changed
(paragraphs extracted from the HTML, nothing reworded), are in
``data/GENERAL_TEXT_LICENSES.txt``.

A user may point ``finetune.general_text`` at a corpus of their own (any licence: it is
read, not shipped): JSON lines (optionally gzipped) with ``text`` and, optionally, ``lang``
and ``split`` (``train`` or ``held_out``), or plain text (optionally gzipped) whose
paragraphs are separated by blank lines, such as Debian Reference's ``.txt`` files. Rows
without a split are assigned by a hash of their text, one in four held out.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kinject.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent / "data" / "general_text.jsonl.gz"
SPLITS = ("train", "held_out")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Plain-text paragraphs shorter than this are headings, list items or code, not prose.
_MIN_CHARS = 80


@dataclass(frozen=True)
class GeneralText:
    text: str
    lang: str
    split: str
    source: str = ""
    doc: str = ""  # the page or chapter it comes from (the shipped corpus splits by it)


def load(path: Path | str | None = None) -> tuple[GeneralText, ...]:
    """Every paragraph of the corpus at ``path`` (None: the shipped one)."""
    return _load(Path(path).expanduser().resolve() if path is not None else SHIPPED)


@lru_cache(maxsize=4)
def _load(path: Path) -> tuple[GeneralText, ...]:
    if not path.is_file():
        raise ConfigError(f"general-text corpus {path} does not exist")
    name = path.name.removesuffix(".gz")
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            raw = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the general-text corpus {path}: {exc}") from exc
    rows = _jsonl(raw, path) if name.endswith((".jsonl", ".json")) else _plain(raw)
    if not rows:
        raise ConfigError(f"the general-text corpus {path} holds no paragraphs")
    return tuple(rows)


def _jsonl(raw: str, path: Path) -> list[GeneralText]:
    rows = []
    for n, line in enumerate(raw.split("\n"), 1):  # not splitlines: JSON may hold raw U+2028
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            text = " ".join(str(rec["text"]).split())
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: not a JSON object with a 'text' field") from exc
        split = rec.get("split") or _hash_split(text)
        if split not in SPLITS:
            raise ConfigError(f"{path}:{n}: split must be one of {SPLITS}, got {split!r}")
        if text:
            rows.append(GeneralText(text, str(rec.get("lang") or _guess_lang(text)), split,
                                    str(rec.get("source", "")), str(rec.get("doc", ""))))
    return rows


def _plain(raw: str) -> list[GeneralText]:
    rows = []
    for para in re.split(r"\n\s*\n", raw):
        text = " ".join(para.split())
        if len(text) >= _MIN_CHARS or (_CJK.search(text) and len(text) >= _MIN_CHARS // 3):
            rows.append(GeneralText(text, _guess_lang(text), _hash_split(text)))
    return rows


def _guess_lang(text: str) -> str:
    return "zh" if len(_CJK.findall(text)) >= 0.3 * len(text.replace(" ", "")) else "en"


def _hash_split(text: str) -> str:
    return "held_out" if hashlib.sha256(text.encode()).digest()[0] % 4 == 0 else "train"


def general_train(lang: str | None = None, path: Path | str | None = None) -> list[str]:
    """Paragraphs to mix into training (never measured by the gate)."""
    return _pick(path, "train", lang)


def general_eval(lang: str | None = None, path: Path | str | None = None) -> list[str]:
    """Every held-out paragraph (never trained on)."""
    return _pick(path, "held_out", lang)


def gate_sample(n: int, path: Path | str | None = None, seed: int = 0) -> list[str]:
    """``n`` held-out paragraphs, the same ones every time (same corpus, ``n`` and ``seed``),
    so every cycle's candidate and baseline are measured on one set. Each language gets an
    equal share (the shipped corpus: half English, half Chinese) unless it has fewer."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    held = [t for t in load(path) if t.split == "held_out"]
    by_lang: dict[str, list[str]] = {}
    for t in held:
        by_lang.setdefault(t.lang, []).append(t.text)
    rng = random.Random(f"general-gate:{seed}")
    out: list[str] = []
    langs = sorted(by_lang)
    left = n
    # smallest languages first, so what one cannot fill goes to the others
    for i, lang in enumerate(sorted(langs, key=lambda k: len(by_lang[k]))):
        share = min(len(by_lang[lang]), left // (len(langs) - i))
        out += rng.sample(by_lang[lang], share)
        left -= share
    return out


def _pick(path: Path | str | None, split: str, lang: str | None) -> list[str]:
    rows = load(path)
    if lang is not None and lang not in {t.lang for t in rows}:
        raise ValueError(f"lang must be None or one of {sorted({t.lang for t in rows})}, "
                         f"got {lang!r}")
    return [t.text for t in rows if t.split == split and (lang is None or t.lang == lang)]

