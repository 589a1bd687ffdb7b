"""RAG answer quality on invented knowledge, kinject vs a usual LangChain pipeline.

Invented people (English and Chinese), five facts each, each biography written in one of
several phrasings, are published as records through the real embedded broker; an ingest
worker and the index materialiser make them searchable, exactly as in production. Questions
are phrased differently from every biography. In the same run the same texts and questions go
through LangChain: FAISS + HuggingFace MiniLM embeddings + SmolLM2 through transformers with
LangChain's usual RAG prompt.

    python bench/rag_quality.py --quick      # a few minutes on 2 CPU cores

Fields: kinject_acc (_en, _zh), langchain_acc (_en, _zh), recall_at_5 (the person's source in
kinject's top 5), cited_right_source (answered questions citing the person's source),
abstain_on_unknown (questions about people who do not exist on which kinject abstains),
vs_langchain (kinject_acc / langchain_acc), seconds per question for each.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    _CITY,
    _FIELD,
    _FIRST,
    _LAST,
    _ORG,
    _ZH_CITY,
    _ZH_FIELD,
    _ZH_GIVEN,
    _ZH_ORG,
    _ZH_SURNAME,
    emit,
    environment,
    median,
    parse_args,
    progress,
)


@dataclass(frozen=True)
class Person:
    name: str
    lang: str
    facts: dict[str, str]
    text: str

    @property
    def source_id(self) -> str:
        return f"bench/people/{self.lang}/{self.name.replace(' ', '_')}"


@dataclass(frozen=True)
class Question:
    text: str
    expected: str | None  # None: about someone who does not exist (kinject must abstain)
    lang: str
    source_id: str | None


_EN_TEXTS = (
    "{name} was born in {city} in {year} and studied {field} before joining {org}. "
    "In {moved} {first} moved to {city2}, where a small museum keeps the notebooks.",
    "Born in {year} in {city}, {name} trained in {field}. {first} later worked for {org} and "
    "settled in {city2} in {moved}.",
    "{name} ({year}) is a native of {city}. After a degree in {field}, {first} took a job at "
    "{org}; in {moved} the family relocated to {city2}.",
)
_EN_QUESTIONS = {
    "city": ("What is the birthplace of {name}?", "In which town did {name} come into the world?"),
    "year": ("What year was {name} born in?", "{name}'s year of birth was what?"),
    "field": ("What subject did {name} study?", "Which discipline was {name} educated in?"),
    "org": ("Which organisation employed {name}?", "Where did {name} have a job?"),
    "city2": ("Which town did {name} move to later in life?",
              "Where did {name} settle down eventually?"),
}
_ZH_TEXTS = (
    "{name}于{year}年出生在{city}，大学学习{field}，毕业后加入{org}。{moved}年，{name}搬到"
    "{city2}，那里的一家小博物馆至今保存着他的笔记。",
    "{name}生于{year}年，家乡是{city}。{name}主修{field}，后来在{org}工作，{moved}年定居{city2}。",
    "{city}人{name}，{year}年出生，专业是{field}，曾任职于{org}，{moved}年移居{city2}。",
)
_ZH_QUESTIONS = {
    "city": ("{name}的出生地是哪里？", "{name}是在哪座城市出生的？"),
    "year": ("{name}是哪一年出生的？", "{name}的出生年份是？"),
    "field": ("{name}读的是什么专业？", "{name}在大学里学的是什么？"),
    "org": ("{name}在哪个单位工作过？", "{name}的工作单位是哪里？"),
    "city2": ("{name}后来住在哪个城市？", "{name}最后定居在哪里？"),
}


def make_people(n_en: int, n_zh: int, rng: random.Random) -> tuple[list[Person], list[str]]:
    """People with unique names, and names kept back for questions about nobody."""
    en_names = [f"{f} {last}" for f in _FIRST for last in _LAST]
    zh_names = [s + g for s in _ZH_SURNAME for g in _ZH_GIVEN]
    rng.shuffle(en_names)
    rng.shuffle(zh_names)
    people = []
    for i in range(n_en):
        name = en_names[i]
        c1, c2 = rng.sample(_CITY, 2)
        year = rng.randint(1921, 1989)
        facts = {"city": c1, "year": str(year), "field": rng.choice(_FIELD),
                 "org": rng.choice(_ORG), "city2": c2, "moved": str(year + rng.randint(25, 35))}
        text = rng.choice(_EN_TEXTS).format(name=name, first=name.split()[0], **facts)
        people.append(Person(name, "en", facts, text))
    for i in range(n_zh):
        name = zh_names[i]
        c1, c2 = rng.sample(_ZH_CITY, 2)
        year = rng.randint(1921, 1989)
        facts = {"city": c1, "year": str(year), "field": rng.choice(_ZH_FIELD),
                 "org": rng.choice(_ZH_ORG), "city2": c2, "moved": str(year + rng.randint(25, 35))}
        text = rng.choice(_ZH_TEXTS).format(name=name, **facts)
        people.append(Person(name, "zh", facts, text))
    unknown = en_names[n_en:n_en + 40] + zh_names[n_zh:n_zh + 40]
    return people, unknown


def make_questions(people: list[Person], unknown: list[str], per_person: int, n_unknown: int,
                   rng: random.Random) -> list[Question]:
    qs = []
    for p in people:
        table = _EN_QUESTIONS if p.lang == "en" else _ZH_QUESTIONS
        for fact in rng.sample(sorted(table), per_person):
            tmpl = rng.choice(table[fact])
            qs.append(Question(tmpl.format(name=p.name), p.facts[fact], p.lang, p.source_id))
    en_unknown = [u for u in unknown if " " in u]
    zh_unknown = [u for u in unknown if " " not in u]
    for i in range(n_unknown):
        lang = "en" if i % 2 == 0 else "zh"
        table = _EN_QUESTIONS if lang == "en" else _ZH_QUESTIONS
        name = rng.choice(en_unknown if lang == "en" else zh_unknown)
        tmpl = rng.choice(table[rng.choice(sorted(table))])
        qs.append(Question(tmpl.format(name=name), None, lang, None))
    return qs


def correct(answer: str, expected: str) -> bool:
    """The expected value (without a leading article) appears in the answer."""
    core = expected.lower().removeprefix("the ")
    return core in answer.lower()


# --- kinject, through the broker ------------------------------------------------------------


def index_through_broker(people: list[Person], data_dir: Path) -> Any:
    """Publish every biography to kinject.records on the embedded broker and wait until the
    index (fed by an ingest worker and the materialiser) holds them all."""
    from kinject.config import load_settings
    from kinject.index.text_index import text_index_from_settings
    from kinject.ingest.envelope import encode_record
    from kinject.stream.broker import connect
    from kinject.stream.clients import make_producer
    from kinject.stream.ingest_worker import IngestWorker
    from kinject.stream.materialiser import IndexMaterialiser
    from kinject.stream.runner import ingest_config
    from kinject.stream.topics import Topics, ensure_topics
    from kinject.types import Record

    settings = load_settings(data_dir=data_dir, kafka={"topic_prefix": "bench-rag"})
    # The index the service builds: MiniLM, and the multilingual space for Chinese chunks.
    index = text_index_from_settings(settings).open()
    embedder = index.embedder
    stop = threading.Event()
    with connect(settings.kafka) as bootstrap:
        ensure_topics(settings.kafka, bootstrap)
        worker = IngestWorker(settings.kafka, bootstrap, ingest_config(settings), embedder,
                              group_id="bench-rag-ingest")
        mat = IndexMaterialiser(settings.kafka, bootstrap, index)
        threads = [threading.Thread(target=t, args=(stop,), daemon=True)
                   for t in (worker.run, mat.run)]
        for th in threads:
            th.start()
        producer = make_producer(settings.kafka, bootstrap)
        topics = Topics.from_settings(settings.kafka)
        t0 = time.perf_counter()
        for p in people:
            rec = Record(source_id=p.source_id, kind="text", content=p.text.encode("utf-8"),
                         meta={"lang": p.lang})
            producer.send(topics.records, key=p.source_id.encode(), value=encode_record(rec))
        producer.flush()
        producer.close()
        wanted = {p.source_id for p in people}
        assert index.docstore is not None
        while any(not index.docstore.lineage(s) for s in wanted):
            if time.perf_counter() - t0 > 300:
                raise TimeoutError("records were not indexed within 300 s")
            time.sleep(0.2)
        progress(f"{len(people)} records published and indexed in "
                 f"{time.perf_counter() - t0:.1f}s ({len(index)} chunks)")
        stop.set()
        for th in threads:
            th.join(timeout=15)
    return index, settings


def run_kinject(index: Any, settings: Any, questions: list[Question], mode: str | None
                ) -> dict[str, Any]:
    from kinject.models import load_generator
    from kinject.rag.service import RagConfig, RagService

    m = settings.models
    generator = load_generator(m.generator, settings.models_dir, m.device, m.dtype)
    config = RagConfig.from_settings(settings)
    if mode is not None:
        config = dataclasses.replace(config, mode=mode)  # type: ignore[arg-type]
    rag = RagService(index, generator, config)
    progress(f"kinject reader mode: {config.mode}")
    right = {"en": [], "zh": []}  # type: dict[str, list[bool]]
    recall, cited, abstained, times = [], [], [], []
    for i, q in enumerate(questions):
        t0 = time.perf_counter()
        answer = rag.ask(q.text, route="rag")
        times.append(time.perf_counter() - t0)
        if q.expected is None:
            abstained.append(answer.abstained)
            continue
        ok = correct(answer.text, q.expected)
        right[q.lang].append(ok)
        hits = index.search(q.text, 5)
        recall.append(any(h.source_id == q.source_id for h in hits))
        if not answer.abstained:
            cited.append(any(c.source_id == q.source_id for c in answer.citations))
        if not ok:
            progress(f"  kinject miss: {q.text} -> {answer.text!r} (want {q.expected})")
        if i % 10 == 0:
            progress(f"kinject {i + 1}/{len(questions)}")
    all_right = right["en"] + right["zh"]
    return {
        "kinject_acc": _share(all_right), "kinject_acc_en": _share(right["en"]),
        "kinject_acc_zh": _share(right["zh"]), "recall_at_5": _share(recall),
        "cited_right_source": _share(cited), "abstain_on_unknown": _share(abstained),
        "kinject_s_per_question": median(times), "kinject_mode": config.mode,
    }


# --- the LangChain peer ---------------------------------------------------------------------

LANGCHAIN_RAG_PROMPT = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved "
    "context to answer the question. If you don't know the answer, just say that you don't "
    "know. Use three sentences maximum and keep the answer concise.\n"
    "Question: {question} \nContext: {context} \nAnswer:"
)  # LangChain's usual RAG prompt (the hub's rlm/rag-prompt)


def run_langchain(people: list[Person], questions: list[Question], settings: Any
                  ) -> dict[str, Any]:
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    from kinject.index.embedders import minilm_path
    from kinject.models import load_generator
    from kinject.rag.generate import generate_chat

    embeddings = HuggingFaceEmbeddings(model_name=str(minilm_path()))
    store = FAISS.from_documents(
        [Document(p.text, metadata={"source": p.source_id}) for p in people], embeddings)
    retriever = store.as_retriever(search_kwargs={"k": 4})
    m = settings.models
    generator = load_generator(m.generator, settings.models_dir, m.device, m.dtype)

    def llm(prompt_value: Any) -> str:
        messages = [{"role": "user", "content": prompt_value.to_string()}]
        return generate_chat(generator, messages, 64)

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    chain = ({"context": retriever | format_docs, "question": RunnablePassthrough()}
             | ChatPromptTemplate.from_template(LANGCHAIN_RAG_PROMPT)
             | RunnableLambda(llm) | StrOutputParser())
    right = {"en": [], "zh": []}  # type: dict[str, list[bool]]
    times = []
    for q in questions:
        if q.expected is None:
            continue
        t0 = time.perf_counter()
        text = chain.invoke(q.text)
        times.append(time.perf_counter() - t0)
        right[q.lang].append(correct(text, q.expected))
    return {"langchain_acc": _share(right["en"] + right["zh"]),
            "langchain_acc_en": _share(right["en"]), "langchain_acc_zh": _share(right["zh"]),
            "langchain_s_per_question": median(times)}


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 3) if flags else 0.0


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-langchain", action="store_true", help="skip the LangChain peer")
        p.add_argument("--mode", choices=("auto", "span", "free"), default=None,
                       help="kinject's reader mode (default: the rag.mode setting)")

    args = parse_args(__doc__ or "", extra=extra)
    rng = random.Random(args.seed)
    n_en, n_zh, per, n_unknown = (6, 4, 2, 6) if args.quick else (40, 30, 3, 40)
    people, unknown = make_people(n_en, n_zh, rng)
    questions = make_questions(people, unknown, per, n_unknown, rng)
    progress(f"{len(people)} people, {len(questions)} questions "
             f"({n_unknown} about nobody)")
    with tempfile.TemporaryDirectory(prefix="kinject-bench-rag-") as tmp:
        data_dir = Path(tmp)
        index, settings = index_through_broker(people, data_dir)
        # Models convert once into the user's cache, not into this throwaway folder.
        from kinject.config import default_data_dir
        settings = settings.model_copy(update={"data_dir": default_data_dir()})
        result: dict[str, Any] = {"bench": "rag_quality", "quick": args.quick,
                                  "people": len(people), "questions": len(questions)}
        result.update(run_kinject(index, settings, questions, args.mode))
        if not args.no_langchain:
            progress("LangChain peer")
            result.update(run_langchain(people, questions, settings))
            if result["langchain_acc"]:
                result["vs_langchain"] = round(result["kinject_acc"] / result["langchain_acc"], 2)
        index.close()
    result["env"] = environment()
    emit(result)


if __name__ == "__main__":
    main()
