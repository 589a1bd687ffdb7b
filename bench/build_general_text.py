"""Build kinject's shipped general-text corpus (src/kinject/finetune/data/general_text.jsonl.gz).

Sources, both installable offline from Debian and both licensed for shipping inside an
Apache-2.0 package (the notices are in ``src/kinject/finetune/data/GENERAL_TEXT_LICENSES.txt``):

- English: prose paragraphs of the Python 3.11 documentation (Debian ``python3.11-doc``,
  HTML under /usr/share/doc/python3.11/html), PSF License Agreement version 2.
- Chinese (Simplified): prose paragraphs of Osamu Aoki's "Guide for Debian Maintainers" in its
  zh-cn translation (Debian ``debmake-doc``, HTML under /usr/share/doc/debmake-doc/html),
  Expat (MIT) licence. Its English original is not used: the two are translations of each
  other, and a paragraph trained on in one language must not be measured in the other.

The split is by document, so the gate's held-out paragraphs come from pages (English) and
chapters (Chinese) that training never sees a line of.

    apt-get install python3.11-doc debmake-doc
    python bench/build_general_text.py

The output is deterministic: the same packages give the same file. The licence notices beside
it (``GENERAL_TEXT_LICENSES.txt``) are kept by hand: update them with the sources.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)

OUT = Path(__file__).resolve().parent.parent / "src/kinject/finetune/data/general_text.jsonl.gz"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_FOOTNOTE = re.compile(r"\s*\[\d+\]\s*")
# Python documentation sections of prose (not the C API, change logs or legacy distutils).
PY_SECTIONS = ("tutorial", "howto", "faq", "library", "reference", "using", "extending")
PY_PARAGRAPHS = 800
PY_HELD_OUT_SHARE = 0.25  # of the pages, chosen by a hash of the page's path
# debmake-doc chapters held out for the gate (about 40 % of its Chinese paragraphs, from five
# chapters on different topics); training replays the others.
ZH_HELD_OUT = ("ch02", "ch04", "ch07", "ch08", "apa")


def _paragraphs(path: Path) -> Iterator[str]:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "lxml")
    for p in soup.find_all("p"):
        if p.find_parent(["pre", "table", "code", "dt"]):
            continue
        yield " ".join(p.get_text().replace("¶", "").split())


def _english(root: Path) -> list[dict[str, str]]:
    pool: list[dict[str, str]] = []
    for section in PY_SECTIONS:
        for page in sorted((root / section).glob("*.html")):
            doc = f"{section}/{page.name}"
            for text in _paragraphs(page):
                words = text.split()
                if not 30 <= len(words) <= 200 or ">>>" in text:
                    continue
                prose = sum(1 for w in words if re.fullmatch(r"[A-Za-z][a-z'’,.;:()-]*", w))
                if prose / len(words) < 0.8:  # mostly identifiers and literals: not prose
                    continue
                pool.append({"lang": "en", "doc": doc, "text": text})
    pool = _dedupe(pool)
    picked = random.Random("kinject-general-en").sample(pool, min(PY_PARAGRAPHS, len(pool)))
    for row in picked:
        held = int(hashlib.sha256(row["doc"].encode()).hexdigest(), 16) % 100
        row["split"] = "held_out" if held < PY_HELD_OUT_SHARE * 100 else "train"
        row["source"] = "python3.11-doc (PSF-2.0)"
    return picked


def _chinese(root: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for page in sorted(root.glob("*.zh-cn.html")):
        chapter = page.name.split(".")[0]
        for text in _paragraphs(page):
            text = _FOOTNOTE.sub(" ", text).strip()
            n = len(_CJK.findall(text))
            if n < 30 or n / len(text) < 0.4 or len(text) > 600:
                continue
            rows.append({"lang": "zh", "doc": page.name, "text": text,
                         "split": "held_out" if chapter in ZH_HELD_OUT else "train",
                         "source": "debmake-doc zh-cn (Expat)"})
    return _dedupe(rows)


def _dedupe(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[str] = set()
    out = []
    for row in rows:
        if row["text"] not in seen:
            seen.add(row["text"])
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python-doc", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    ap.add_argument("--debmake-doc", type=Path,
                    default=Path("/usr/share/doc/debmake-doc/html"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = _english(args.python_doc) + _chinese(args.debmake_doc)
    rows.sort(key=lambda r: (r["lang"], r["split"], r["doc"], r["text"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # no name, mtime=0: the same rows give the same bytes
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                    mtime=0) as gz:
        for row in rows:
            line = {"lang": row["lang"], "split": row["split"], "source": row["source"],
                    "doc": row["doc"], "text": row["text"]}
            gz.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[row["lang"], row["split"]] = counts.get((row["lang"], row["split"]), 0) + 1
    print(f"{args.out}: {len(rows)} paragraphs, {args.out.stat().st_size} bytes")
    for (lang, split), n in sorted(counts.items()):
        print(f"  {lang} {split}: {n}")


if __name__ == "__main__":
    main()
