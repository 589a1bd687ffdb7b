"""RAG answer quality on relation families nobody tuned for: kinject vs a usual LangChain chain.

Fourteen families of invented facts (people, organisations, products, places, procedures,
technical manuals), in English and Chinese, written as prose with several facts a sentence,
as markdown table rows and as JSON records (``bench/rag_data/``). Questions are phrased apart
from the passages, and some ask about entities that do not exist (kinject must abstain).
The families are split once, in ``bench/rag_data/families.py``: tuning may look at the *dev*
families; the figure to report is the *test* families'. A large dev-test gap means tuning
leaked into the reader.

The road is the product's: a live ``kinject serve`` (the embedded Kafka broker, an ingest
worker, the index materialiser, the API), passages published with ``POST /v1/records``,
questions asked with ``POST /v1/ask`` and ``GET /v1/search``, one at a time. The LangChain
peer reads the same passages with the same embedders (MiniLM for English, the multilingual
USE for Chinese, as kinject routes them) and the same generator, once with LangChain's usual
RAG prompt and once with a terse prompt.

    python bench/rag_quality.py --quick      # 42 questions; 7 minutes on 2 busy cores
    python bench/rag_quality.py              # 112 answerable + 56 unknown; 27 minutes
    python bench/rag_quality.py --split dev  # while tuning: only the dev families' passages
                                             # and questions (the test families stay unseen)

The last stdout line is one JSON object with ``dev`` and ``test`` fields, each holding
answers_right (_en, _zh: the expected value in the answer and no competing value of the same
passage), answers_contain (the expected value anywhere in the answer), abstain_on_unknown
(_en, _zh), cited_right_source (the first citation of an answered question is its passage),
recall_at_5, recall_at_2_en / _zh (the right passage among the first two hits), on dev
unnamed_right / abstain_unnamed (questions naming nothing: notices answered, questions that no
passage answers, off-topic or about the families' kinds of things, abstained on), near_right /
abstain_near (dev: questions on a named place or maker answered, and questions about an absent
thing sharing a part of its name abstained on), reader_calls
(the reader's model calls per question), p50_s (kinject's seconds per question over HTTP), the
peer's figures
(langchain_usual, langchain_terse) and vs_langchain_usual / vs_langchain_terse (answers right,
kinject / peer). ``--out DIR`` also writes every question with both answers as CSV.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

from _common import (  # noqa: E402
    emit,
    environment,
    median,
    parse_args,
    progress,
    publish_and_wait,
    use_threads,
    write_csv,
)
from rag_data.dataset import (  # noqa: E402
    FULL,
    NEAR_MISS,
    QUICK,
    UNNAMED,
    Dataset,
    Question,
    Sizes,
    build,
    contains_expected,
    is_right,
)
from rag_data.families import DEV, TEST  # noqa: E402

SPLITS = ("dev", "test")
LANGS = ("en", "zh")

# Where a question's seconds go (the answer's timings): retrieval (embedding + search), then
# the reader's stages: copying the name asked about, weighing units, reading.
STAGES = ("retrieve_s", "reader_subject_s", "reader_weigh_s", "reader_read_s")

# --- kinject, through `kinject serve` ---------------------------------------------------------


def ask_kinject(url: str, questions: tuple[Question, ...]) -> list[dict[str, Any]]:
    """One POST /v1/ask (and one GET /v1/search for recall) per question, in order."""
    rows = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for i, q in enumerate(questions):
            t0 = time.perf_counter()
            r = c.post("/v1/ask", json={"question": q.text, "route": "rag"})
            seconds = time.perf_counter() - t0
            r.raise_for_status()
            body = r.json()
            hits = c.get("/v1/search", params={"q": q.text, "k": 5}).json()["hits"]
            cites = [x["source_id"] for x in body["citations"]]
            rows.append({"text": body["text"], "abstained": bool(body["abstained"]),
                         "first_cite": cites[0] if cites else None, "seconds": seconds,
                         "reader_calls": body.get("timings", {}).get("reader_calls", 0.0),
                         "stages": {k: v for k, v in body.get("timings", {}).items()
                                    if k in STAGES},
                         "recall5": any(h["source_id"] == q.source_id for h in hits),
                         # within the first two passages (rag.reader_passages' default)
                         "recall2": q.source_id in [h["source_id"] for h in hits][:2]})
            if (i + 1) % 20 == 0:
                progress(f"kinject {i + 1}/{len(questions)}")
    return rows


def run_kinject(data: Dataset, generator: str) -> list[dict[str, Any]]:
    from ask_load import start_server

    key = "bench-" + secrets.token_urlsafe(16)
    args = types.SimpleNamespace(embedder="minilm", generator=generator)
    with tempfile.TemporaryDirectory(prefix="kinject-bench-rag-") as tmp:
        progress("starting kinject serve")
        url, stop, thread = start_server(Path(tmp), args, key, {})  # type: ignore[arg-type]
        try:
            publish_and_wait(url, key, {p.source_id: p.text for p in data.passages}, 600)
            return ask_kinject(url, data.questions)
        finally:
            stop.set()
            thread.join(60)


# --- the LangChain peer ------------------------------------------------------------------------

LANGCHAIN_RAG_PROMPT = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved "
    "context to answer the question. If you don't know the answer, just say that you don't "
    "know. Use three sentences maximum and keep the answer concise.\n"
    "Question: {question} \nContext: {context} \nAnswer:"
)  # LangChain's usual RAG prompt (the hub's rlm/rag-prompt)
TERSE_PROMPT = (
    "Answer the question from the context. Reply with the answer only: a name, number, date "
    "or short phrase copied from the context, no sentence. If the context does not say, reply "
    "\"I don't know\".\nContext:\n{context}\nQuestion: {question}\nAnswer:"
)
PROMPTS = {"usual": (LANGCHAIN_RAG_PROMPT, 64), "terse": (TERSE_PROMPT, 32)}


class _KinjectEmbeddings:
    """A LangChain ``Embeddings`` over one of kinject's embedders (the multilingual USE has no
    LangChain class of its own)."""

    def __init__(self, spec: str) -> None:
        from kinject.index.embedders import load_embedder

        self._embedder = load_embedder(spec)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self._embedder.encode(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def run_langchain(data: Dataset, generator_spec: str) -> dict[str, list[dict[str, Any]]]:
    """Both prompts on every answerable question; returns per prompt one row per question
    (None for questions about nobody, which the peer is not asked)."""
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    from kinject.index.embedders import minilm_path
    from kinject.models import load_generator
    from kinject.rag.generate import generate_chat

    class KinjectEmbeddings(_KinjectEmbeddings, Embeddings):
        pass

    # The same spaces as kinject: MiniLM over every passage for English questions, the
    # multilingual USE over the Chinese passages for Chinese questions.
    docs = {lang: [Document(p.text, metadata={"source": p.source_id})
                   for p in data.passages if lang == "en" or p.lang == "zh"] for lang in LANGS}
    stores = {
        "en": FAISS.from_documents(docs["en"], HuggingFaceEmbeddings(
            model_name=str(minilm_path()))),
        "zh": FAISS.from_documents(docs["zh"], KinjectEmbeddings("use-multilingual")),
    }
    from kinject.config import default_data_dir, load_settings

    settings = load_settings(data_dir=default_data_dir())
    m = settings.models
    generator = load_generator(generator_spec, settings.models_dir, m.device, m.dtype)

    def format_docs(found: list[Document]) -> str:
        return "\n\n".join(d.page_content for d in found)

    def chain(lang: str, prompt: str, max_new_tokens: int) -> Any:
        def llm(prompt_value: Any) -> str:
            messages = [{"role": "user", "content": prompt_value.to_string()}]
            return generate_chat(generator, messages, max_new_tokens)

        retriever = stores[lang].as_retriever(search_kwargs={"k": 4})
        return ({"context": retriever | format_docs, "question": RunnablePassthrough()}
                | ChatPromptTemplate.from_template(prompt) | RunnableLambda(llm)
                | StrOutputParser())

    out: dict[str, list[dict[str, Any]]] = {}
    for name, (prompt, max_new) in PROMPTS.items():
        chains = {lang: chain(lang, prompt, max_new) for lang in LANGS}
        rows: list[dict[str, Any]] = []
        for i, q in enumerate(data.questions):
            if q.expected is None:
                rows.append({})
                continue
            t0 = time.perf_counter()
            text = chains[q.lang].invoke(q.text)
            rows.append({"text": text, "seconds": time.perf_counter() - t0})
            if len(rows) % 10 == 0:
                progress(f"LangChain ({name} prompt) {i + 1}/{len(data.questions)}")
        out[name] = rows
    return out


# --- figures -------------------------------------------------------------------------------------


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 2)


def figures(data: Dataset, kin: list[dict[str, Any]],
            peer: dict[str, list[dict[str, Any]]] | None, split: str) -> dict[str, Any]:
    """The figures of one split, overall and per language."""
    right: dict[str, list[bool]] = defaultdict(list)
    contain: list[bool] = []
    abstain: dict[str, list[bool]] = defaultdict(list)
    cited: dict[str, list[bool]] = defaultdict(list)
    recall: list[bool] = []
    recall2: dict[str, list[bool]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    calls: list[float] = []
    by_family: dict[str, list[bool]] = defaultdict(list)
    unnamed: dict[str, list[bool]] = defaultdict(list)
    for q, row in zip(data.questions, kin, strict=True):
        if q.split != split:
            continue
        if q.family in (UNNAMED, NEAR_MISS):  # dev-only hand-written sets: reported apart
            tag = "" if q.family == UNNAMED else "_near"
            if q.expected is None:
                unnamed["abstain" + tag].append(row["abstained"])
            else:
                unnamed["right" + tag].append(is_right(row["text"], q))
            continue
        seconds[q.lang].append(row["seconds"])
        seconds["all"].append(row["seconds"])
        calls.append(row.get("reader_calls", 0.0))
        for k, v in row.get("stages", {}).items():
            seconds[k].append(v)
        if q.expected is None:
            abstain[q.lang].append(row["abstained"])
            abstain["all"].append(row["abstained"])
            continue
        ok = is_right(row["text"], q)
        right[q.lang].append(ok)
        right["all"].append(ok)
        by_family[q.family].append(ok)
        contain.append(contains_expected(row["text"], q.expected))
        recall.append(row["recall5"])
        recall2[q.lang].append(row.get("recall2", False))
        if not row["abstained"]:
            cited[q.lang].append(row["first_cite"] == q.source_id)
            cited["all"].append(row["first_cite"] == q.source_id)
    out: dict[str, Any] = {
        "families": [f.name for f in (DEV if split == "dev" else TEST)],
        "questions": len(right["all"]), "unknown": len(abstain["all"]),
        "answers_right": _share(right["all"]), "answers_right_en": _share(right["en"]),
        "answers_right_zh": _share(right["zh"]), "answers_contain": _share(contain),
        "abstain_on_unknown": _share(abstain["all"]), "abstain_en": _share(abstain["en"]),
        "abstain_zh": _share(abstain["zh"]), "cited_right_source": _share(cited["all"]),
        "cited_right_source_en": _share(cited["en"]), "cited_right_source_zh": _share(cited["zh"]),
        "recall_at_5": _share(recall), "recall_at_2_en": _share(recall2["en"]),
        "recall_at_2_zh": _share(recall2["zh"]),
        **{f"p50_s{suffix}": round(median(seconds[key]), 3) if seconds[key] else None
           for key, suffix in (("all", ""), ("en", "_en"), ("zh", "_zh"))},
        "reader_calls": round(sum(calls) / len(calls), 2) if calls else None,
        **{f"p50_{k}": round(median(seconds[k]), 3) for k in STAGES if seconds[k]},
        "by_family": {f: _share(v) for f, v in sorted(by_family.items())},
    }
    if unnamed:  # dev only: notices answered, and questions no passage answers abstained on
        out["unnamed_right"] = _share(unnamed["right"])
        out["abstain_unnamed"] = _share(unnamed["abstain"])
        # questions about an absent thing sharing a part of a passage's name, and their
        # answerable neighbours (rag_data/unnamed.py NEAR)
        out["near_right"] = _share(unnamed["right_near"])
        out["abstain_near"] = _share(unnamed["abstain_near"])
    for name, rows in (peer or {}).items():
        flags: dict[str, list[bool]] = defaultdict(list)
        times = []
        for q, row in zip(data.questions, rows, strict=True):
            if q.split != split or q.expected is None:
                continue
            ok = is_right(row["text"], q)
            flags[q.lang].append(ok)
            flags["all"].append(ok)
            flags["contain"].append(contains_expected(row["text"], q.expected))
            times.append(row["seconds"])
        out[f"langchain_{name}"] = {
            "answers_right": _share(flags["all"]), "answers_right_en": _share(flags["en"]),
            "answers_right_zh": _share(flags["zh"]), "answers_contain": _share(flags["contain"]),
            "p50_s": round(median(times), 3) if times else None}
        out[f"vs_langchain_{name}"] = _ratio(out["answers_right"], _share(flags["all"]))
    return out


def report(result: dict[str, Any], splits: tuple[str, ...] = SPLITS) -> None:
    """A small table on stderr; the JSON line stays the last line of stdout."""
    keys = ("answers_right", "answers_right_en", "answers_right_zh", "answers_contain",
            "abstain_on_unknown", "abstain_en", "abstain_zh", "cited_right_source",
            "cited_right_source_en", "cited_right_source_zh", "recall_at_5", "recall_at_2_en",
            "recall_at_2_zh", "unnamed_right", "abstain_unnamed", "near_right", "abstain_near",
            "reader_calls",
            "p50_s", "p50_s_en", "p50_s_zh", *(f"p50_{k}" for k in STAGES),
            "vs_langchain_usual", "vs_langchain_terse")
    progress(f"{'':22} " + " ".join(f"{s:>7}" for s in splits))
    for k in keys:
        vals = [result[s].get(k) for s in splits]
        progress(f"{k:22} " + " ".join(f"{'-' if v is None else v:>7}" for v in vals))
    for name in PROMPTS:
        for s in splits:
            peer = result[s].get(f"langchain_{name}")
            if peer:
                progress(f"LangChain {name} prompt, {s}: {peer}")


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-langchain", action="store_true", help="skip the LangChain peer")
        p.add_argument("--questions", type=int, default=None,
                       help="answerable questions per family and language")
        p.add_argument("--generator", default="smollm2", help="kinject's and the peer's LM")
        p.add_argument("--threads", type=int, default=None,
                       help="torch threads for kinject and the peer alike (default: torch's); "
                            "1 is much faster when other processes keep the cores busy")
        p.add_argument("--split", choices=("dev", "test", "both"), default="both",
                       help="which families to publish and ask; tune on dev only, report both")
        p.add_argument("--show-misses", type=int, default=12,
                       help="wrong kinject answers to print on stderr, per split")
        p.add_argument("--dump-reader", type=Path, default=None,
                       help="the reader reads past its bar and logs each question's signals "
                            "to this JSONL file (bench/fit_abstain.py)")

    args = parse_args(__doc__ or "", extra=extra, repeats=(1, 1))
    use_threads(args.threads)  # before torch loads
    if args.dump_reader is not None:
        from _reader_dump import install

        install(args.dump_reader)
    sizes = QUICK if args.quick else FULL
    if args.questions is not None:
        sizes = Sizes(sizes.entities, args.questions, sizes.unknown)
    data = build(args.seed, sizes)
    splits = SPLITS if args.split == "both" else (args.split,)
    if args.split != "both":  # the other split's passages and questions are never shown
        keep = {f.name for f in (DEV if args.split == "dev" else TEST)}
        keep |= {UNNAMED, NEAR_MISS} if args.split == "dev" else set()
        data = Dataset(tuple(p for p in data.passages if p.family in keep),
                       tuple(q for q in data.questions if q.split == args.split))
    n_unknown = sum(q.expected is None for q in data.questions)
    progress(f"{len(DEV)} dev + {len(TEST)} test families, {len(data.passages)} passages, "
             f"{len(data.questions)} questions ({n_unknown} about entities that do not exist)")

    from ask_load import converted

    generator = converted(args.generator)
    kin = run_kinject(data, generator)
    peer = None
    if not args.no_langchain:
        progress("LangChain peer")
        peer = run_langchain(data, generator)
    result: dict[str, Any] = {"bench": "rag_quality", "version": 2, "quick": args.quick,
                              "seed": args.seed, "passages": len(data.passages),
                              "questions": len(data.questions), "split": args.split}
    for split in splits:
        result[split] = figures(data, kin, peer, split)
        shown = 0
        for q, row in zip(data.questions, kin, strict=True):
            if q.split != split or shown >= args.show_misses:
                continue
            wrong = (not row["abstained"]) if q.expected is None else not is_right(row["text"], q)
            if wrong:
                shown += 1
                progress(f"  {split} miss [{q.family}]: {q.text} -> {row['text']!r} "
                         f"(want {q.expected or 'abstention'})")
    if len(splits) == 2:
        dev, test = result["dev"]["answers_right"], result["test"]["answers_right"]
        result["dev_minus_test"] = None if dev is None or test is None else round(dev - test, 3)
    if args.out is not None:
        rows = []
        for i, (q, row) in enumerate(zip(data.questions, kin, strict=True)):
            rows.append({
                "split": q.split, "family": q.family, "lang": q.lang, "relation": q.relation,
                "question": q.text, "expected": q.expected or "", "source_id": q.source_id or "",
                "kinject": row["text"], "kinject_right": (row["abstained"] if q.expected is None
                                                          else is_right(row["text"], q)),
                **{f"langchain_{n}": (peer[n][i].get("text", "") if peer else "")
                   for n in PROMPTS},
            })
        progress(f"wrote {write_csv(args.out / 'rag_quality.csv', rows)}")
    report(result, splits)
    result["env"] = environment()
    emit(result)


if __name__ == "__main__":
    main()
