"""Answers on real documents nobody in the project wrote, through `kinject serve` and HTTP.

The quality benches (rag_quality.py, inject.py) are built from generated facts. This one is the
other check the project holds itself to: real pages as a user publishes them, questions a
person wrote in their own words after reading them. Two splits, on different documents of the
same kinds: ``--split test`` (the default; the README's numbers) and ``--split dev``. Tune the
reader on dev only; run test once, to check what dev taught. Test documents (Debian
packages; the bench says which to install when one is missing):

- Debian Reference, English chapters 2 (package management) and 6 (network applications) and
  Simplified Chinese chapters 1 and 2, as their DocBook XHTML pages; chapter 4
  (authentication) in both languages from the manual's plain-text version (w3m-drawn tables)
  (``debian-reference-en``, ``debian-reference-zh-cn``; GPL-2+);
- five pages of Python 3.11's documentation, Sphinx HTML (``python3.11-doc``; PSF);
- the freedesktop Shared MIME-info specification, a 17-page PDF (``shared-mime-info``);
- ``/etc/services`` as a CSV table (name, port, protocol, aliases).

Questions (``bench/realdocs_data/questions.jsonl``): 29 written by a session's helper that
read the pages (21 English, 8 Chinese, each answer checked in the text), plus 5 whose answer
is in none of the documents (the service should abstain). They were written once, before any
code was changed for them; do not tune on them: they are a test set.

Dev documents: Debian Reference English chapters 3 (system initialization) and 5 (network
setup) and Simplified Chinese chapters 3 and 5 as XHTML, chapter 8 (i18n and L10N) in both
languages as plain text; Python's tutorial/controlflow, tutorial/inputoutput, library/os.path
and library/argparse pages; the GNU Libtasn1 manual, a 36-page PDF (``libtasn1-doc``);
``/etc/protocols`` as CSV (name, number, aliases). Questions
(``bench/realdocs_data/dev_questions.jsonl``): 20 English, 8 Chinese, 5 unanswerable (2 of
them Chinese), written the same way by another helper.

Everything goes the user's way: a `kinject serve` (embedded broker, in a thread of this
process, its own data dir), the files POSTed to ``/v1/records`` (binary ones base64, the kind
sniffed), wait until ``/v1/lineage`` shows every source indexed, then ``POST /v1/ask`` (route
rag) and ``GET /v1/search`` (k 4) per question.

Reported: ``answers_right`` (the checked reference occurs in the answer, case-sensitive:
``dpkg -l`` is not ``dpkg -L``; quotes and spaces normalised), per language, ``abstention``
(the unanswerable questions abstained), ``cited_right`` (answered questions whose first
citation is the question's source), ``recall4`` (a top-4 search hit holds the reference),
``p50_s``; the per-question rows go to ``--out``/realdocs.csv (dev: realdocs_dev.csv).

``--search-only`` measures retrieval alone (no ``/v1/ask``, minutes faster): per answerable
question, ``GET /v1/search`` (k 10) in each mode (hybrid, the served default; vector; bm25),
and the share whose reference is in a hit of the top 1, 4 and 10 (``recall1``, ``recall4``,
``recall10``, per mode; rows to realdocs_search[_dev].csv). ``--data-dir`` keeps the served
data dir (default: a temporary one) to look at afterwards.

    python bench/realdocs.py [--split dev|test] [--search-only] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import re
import secrets
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from _common import (  # noqa: E402
    emit,
    environment,
    parse_args,
    progress,
    publish_and_wait,
    use_threads,
    write_csv,
)

HERE = Path(__file__).parent
DEBREF = Path("/usr/share/debian-reference")
PYDOC = Path("/usr/share/doc/python3.11/html")


def _chapter(lang: str, number: int) -> bytes:
    """Chapter ``number`` of the Debian Reference's plain-text version, as the manual prints it."""
    text = gzip.decompress((DEBREF / f"debian-reference.{lang}.txt.gz").read_bytes()).decode()
    sp = "[ \u00a0]"  # the headings are set with no-break spaces
    heads = [(rf"(?m)^Chapter{sp}{n}\.{sp}" if lang == "en" else rf"(?m)^第{sp}{n}{sp}章{sp}")
             for n in (number, number + 1)]
    # the table of contents names every chapter too: the chapter itself is the last match
    start = max(m.start() for m in re.finditer(heads[0], text))
    found = re.search(heads[1], text[start:])
    end = start + found.start() if found else None
    return text[start:end].encode()


def _services() -> bytes:
    """/etc/services as CSV: one row per service and protocol."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "port", "protocol", "aliases"])
    for line in Path("/etc/services").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and "/" in fields[1]:
            port, proto = fields[1].split("/", 1)
            writer.writerow([fields[0], port, proto, " ".join(fields[2:])])
    return out.getvalue().encode()


def _protocols() -> bytes:
    """/etc/protocols as CSV: one row per protocol."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "number", "aliases"])
    for line in Path("/etc/protocols").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            writer.writerow([fields[0], fields[1], " ".join(fields[2:])])
    return out.getvalue().encode()


def _file(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


Documents = dict[str, tuple[Callable[[], bytes], str]]

# source id -> (what makes its bytes, the Debian package that ships it)
TEST_DOCUMENTS: Documents = {
    "debref/en/ch02.html": (_file(DEBREF / "ch02.en.html"), "debian-reference-en"),
    "debref/en/ch06.html": (_file(DEBREF / "ch06.en.html"), "debian-reference-en"),
    "debref/zh-cn/ch01.html": (_file(DEBREF / "ch01.zh-cn.html"), "debian-reference-zh-cn"),
    "debref/zh-cn/ch02.html": (_file(DEBREF / "ch02.zh-cn.html"), "debian-reference-zh-cn"),
    "debref/en/ch04.txt": (lambda: _chapter("en", 4), "debian-reference-en"),
    "debref/zh-cn/ch04.txt": (lambda: _chapter("zh-cn", 4), "debian-reference-zh-cn"),
    "python/tutorial/venv.html": (_file(PYDOC / "tutorial/venv.html"), "python3.11-doc"),
    "python/tutorial/errors.html": (_file(PYDOC / "tutorial/errors.html"), "python3.11-doc"),
    "python/tutorial/datastructures.html": (_file(PYDOC / "tutorial/datastructures.html"),
                                            "python3.11-doc"),
    "python/library/json.html": (_file(PYDOC / "library/json.html"), "python3.11-doc"),
    "python/library/pathlib.html": (_file(PYDOC / "library/pathlib.html"), "python3.11-doc"),
    "shared-mime-info/spec.pdf": (
        _file(Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")),
        "shared-mime-info"),
    "etc/services.csv": (_services, "netbase"),
}

DEV_DOCUMENTS: Documents = {
    "debref/en/ch03.html": (_file(DEBREF / "ch03.en.html"), "debian-reference-en"),
    "debref/en/ch05.html": (_file(DEBREF / "ch05.en.html"), "debian-reference-en"),
    "debref/zh-cn/ch03.html": (_file(DEBREF / "ch03.zh-cn.html"), "debian-reference-zh-cn"),
    "debref/zh-cn/ch05.html": (_file(DEBREF / "ch05.zh-cn.html"), "debian-reference-zh-cn"),
    "debref/en/ch08.txt": (lambda: _chapter("en", 8), "debian-reference-en"),
    "debref/zh-cn/ch08.txt": (lambda: _chapter("zh-cn", 8), "debian-reference-zh-cn"),
    "python/tutorial/controlflow.html": (_file(PYDOC / "tutorial/controlflow.html"),
                                         "python3.11-doc"),
    "python/tutorial/inputoutput.html": (_file(PYDOC / "tutorial/inputoutput.html"),
                                         "python3.11-doc"),
    "python/library/os.path.html": (_file(PYDOC / "library/os.path.html"), "python3.11-doc"),
    "python/library/argparse.html": (_file(PYDOC / "library/argparse.html"), "python3.11-doc"),
    "libtasn1/libtasn1.pdf": (_file(Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")),
                              "libtasn1-doc"),
    "etc/protocols.csv": (_protocols, "netbase"),
}

# split -> (its documents, its questions); tune on dev only, test is run once to check
SPLITS: dict[str, tuple[Documents, Path]] = {
    "test": (TEST_DOCUMENTS, HERE / "realdocs_data" / "questions.jsonl"),
    "dev": (DEV_DOCUMENTS, HERE / "realdocs_data" / "dev_questions.jsonl"),
}


def load_documents(documents: Documents) -> dict[str, bytes]:
    """Every document's bytes; a missing one ends the bench naming the packages to install."""
    docs, missing = {}, set()
    for sid, (read, package) in documents.items():
        try:
            docs[sid] = read()
        except OSError:
            missing.add(package)
    if missing:
        raise SystemExit("the real documents come from Debian packages; install them first: "
                         f"apt-get install {' '.join(sorted(missing))}")
    return docs


def _norm(text: str | None) -> str:
    text = (text or "").replace("“", '"').replace("”", '"').replace("’", "'")
    return " ".join(text.split())


STAGES = ("retrieve_s", "reader_subject_s", "reader_weigh_s", "reader_read_s", "reader_calls")


def ask(c: httpx.Client, q: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = c.post("/v1/ask", json={"question": q["question"], "route": "rag"})
    seconds = time.perf_counter() - t0
    r.raise_for_status()
    body = r.json()
    hits = c.get("/v1/search", params={"q": q["question"], "k": 4}).json()["hits"]
    ref = _norm(q.get("reference"))
    cites = [x["source_id"] for x in body["citations"]]
    return {
        "id": q["id"], "language": q["language"], "question": q["question"],
        "reference": q.get("reference") or "", "answer": body["text"],
        "abstained": bool(body["abstained"]), "first_cite": cites[0] if cites else "",
        "right": (bool(body["abstained"]) if not ref else ref in _norm(body["text"])),
        "cited_right": bool(cites) and cites[0] in q.get("sources", []),
        "recall4": bool(ref) and any(ref in _norm(h.get("text")) for h in hits),
        "seconds": round(seconds, 3),
        # where they went: retrieval, then the reader's stages (name copy, weighing, reading)
        **{k: round(float(body.get("timings", {}).get(k, 0.0)), 3) for k in STAGES},
    }


SEARCH_MODES = ("hybrid", "vector", "bm25")
SEARCH_DEPTHS = (1, 4, 10)


def search_ranks(c: httpx.Client, q: dict[str, Any]) -> dict[str, Any]:
    """Per search mode, the rank (1..10) of the first hit holding the reference, 0 if none."""
    ref = _norm(q["reference"])
    row: dict[str, Any] = {"id": q["id"], "language": q["language"], "question": q["question"],
                           "reference": q["reference"]}
    for mode in SEARCH_MODES:
        r = c.get("/v1/search", params={"q": q["question"], "k": max(SEARCH_DEPTHS),
                                        "mode": mode})
        r.raise_for_status()
        texts = [_norm(h.get("text")) for h in r.json()["hits"]]
        row[f"{mode}_rank"] = next((n for n, t in enumerate(texts, 1) if ref in t), 0)
    return row


def search_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(rows)}
    for mode in SEARCH_MODES:
        for depth in SEARCH_DEPTHS:
            for lang in ("", "en", "zh"):
                part = [r for r in rows if not lang or r["language"] == lang]
                key = f"{mode}_recall{depth}" + (f"_{lang}" if lang else "")
                out[key] = (round(sum(0 < r[f"{mode}_rank"] <= depth for r in part)
                                  / len(part), 3) if part else None)
    return out


def _share(rows: list[dict[str, Any]], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 3) if rows else None


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answerable = [r for r in rows if r["reference"]]
    unanswerable = [r for r in rows if not r["reference"]]
    answered = [r for r in answerable if not r["abstained"]]
    return {
        "questions": len(rows),
        "answers_right": _share(answerable, "right"),
        **{f"answers_right_{lang}": _share([r for r in answerable if r["language"] == lang],
                                           "right") for lang in ("en", "zh")},
        "abstention": _share(unanswerable, "right"),
        "abstained_when_answerable": _share(answerable, "abstained"),
        "cited_right": _share(answered, "cited_right"),
        "recall4": _share(answerable, "recall4"),
        "p50_s": round(median(r["seconds"] for r in rows), 3),
        **{f"p50_{k}": round(median(r[k] for r in rows), 3) for k in STAGES},
    }


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=None,
                       help="torch threads (default: torch's); 1 on busy cores")
        p.add_argument("--generator", default="smollm2")
        p.add_argument("--split", choices=sorted(SPLITS), default="test",
                       help="test (default; the README's numbers, never tuned on) or dev")
        p.add_argument("--search-only", action="store_true",
                       help="retrieval alone: recall@1/4/10 of GET /v1/search per mode")
        p.add_argument("--data-dir", type=Path, default=None,
                       help="serve from (and keep) this data dir; default a temporary one")
        p.add_argument("--dump-reader", type=Path, default=None,
                       help="the reader reads past its bar and logs each question's signals "
                            "to this JSONL file (bench/fit_abstain.py)")

    args = parse_args(__doc__ or "", extra=extra, repeats=(1, 1))
    use_threads(args.threads)
    if args.dump_reader is not None:
        from _reader_dump import install

        install(args.dump_reader)
    documents, question_file = SPLITS[args.split]
    docs = load_documents(documents)
    questions = [json.loads(line) for line in question_file.read_text().splitlines() if line]
    from ask_load import start_server

    key = "bench-" + secrets.token_urlsafe(16)
    server_args = types.SimpleNamespace(embedder="minilm", generator=args.generator)
    if args.search_only:
        questions = [q for q in questions if q.get("reference")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kinject-bench-realdocs-") as tmp:
        progress(f"starting kinject serve; {len(docs)} documents, {len(questions)} questions")
        data_dir = args.data_dir or Path(tmp)
        url, stop, thread = start_server(data_dir, server_args, key, {})  # type: ignore[arg-type]
        try:
            seconds, chunks = publish_and_wait(url, key, docs)
            with httpx.Client(base_url=url, timeout=600) as c:
                for q in questions:
                    if args.search_only:
                        rows.append(search_ranks(c, q))
                        progress(f"{q['id']} ranks " + " ".join(
                            f"{m} {rows[-1][f'{m}_rank']}" for m in SEARCH_MODES))
                        continue
                    rows.append(ask(c, q))
                    r = rows[-1]
                    progress(f"{r['id']} {'ok ' if r['right'] else 'NO '} {r['seconds']:5.1f}s "
                             f"{r['answer'][:90]!r}")
        finally:
            stop.set()
            thread.join(60)
    out = args.out or HERE / "out"
    suffix = "" if args.split == "test" else "_dev"
    if args.search_only:
        write_csv(out / f"realdocs_search{suffix}.csv", rows)
        emit({"bench": "realdocs-search", "split": args.split, **search_figures(rows),
              "index_seconds": round(seconds, 1), "index_chunks": chunks,
              "environment": environment()})
        return
    write_csv(out / f"realdocs{suffix}.csv", rows)
    emit({"bench": "realdocs", "split": args.split, **figures(rows),
          "index_seconds": round(seconds, 1), "index_chunks": chunks,
          "environment": environment()})


if __name__ == "__main__":
    main()
