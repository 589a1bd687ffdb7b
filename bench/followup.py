"""Follow-up questions in a chat: how often retrieval finds the right passage when the
conversation's earlier user turns make the last question standalone
(kinject.api.openai_compat.standalone_question), against the last message alone.

Data: bench/rag_data's invented entities (fourteen families, English and Chinese, prose,
tables and JSON). For each answerable question that names its entity, a conversation:

    user: Tell me about <entity>.          (zh: 介绍一下<entity>。)
    assistant: ...
    user: <the question with the entity's name replaced by "it" / "它">

and, to see what the earlier turns cost when the topic changes, the question asked whole
after an opener about *another* entity of the same family. Retrieval is kinject's own index
(default embedders: MiniLM, the multilingual USE for Chinese, BM25, fused) with rag.k hits.

    python bench/followup.py --quick     # a few minutes on 2 busy cores

The last stdout line is one JSON object: right_source_at_1 / right_source_at_k for
follow_up_alone, follow_up_standalone, whole_question (the upper bound) and
topic_change_standalone, each also per language.
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, environment, parse_args, progress  # noqa: E402
from kinject.api.openai_compat import standalone_question  # noqa: E402
from kinject.config import load_settings  # noqa: E402
from kinject.index.changes import SourceUpdate  # noqa: E402
from kinject.index.text_index import text_index_from_settings  # noqa: E402
from kinject.ingest.pipeline import IngestConfig, ingest_record  # noqa: E402
from kinject.types import Record, content_hash  # noqa: E402
from rag_data.dataset import FULL, QUICK, build  # noqa: E402


def _opener(entity: str, lang: str) -> str:
    return f"介绍一下{entity}。" if lang == "zh" else f"Tell me about {entity}."


def _pronoun(lang: str) -> str:
    return "它" if lang == "zh" else "it"


def main() -> None:
    args = parse_args(__doc__ or "", repeats=(1, 1))
    data = build(args.seed, QUICK if args.quick else FULL)
    settings = load_settings(data_dir=Path(tempfile.mkdtemp(prefix="kinject-followup-")))
    k = settings.rag.k
    index = text_index_from_settings(settings).open()
    progress(f"indexing {len(data.passages)} passages")
    for p in data.passages:
        record = Record(p.source_id, kind="text", content=p.text.encode("utf-8"))
        chunks = tuple(ingest_record(record, IngestConfig(ocr_engine="none")).chunks)
        # the Chinese space's vectors are made by the index itself, as on a replica
        index.apply([SourceUpdate(op="upsert", source_id=p.source_id, chunks=chunks,
                                  vectors=index.embedder.encode([c.text for c in chunks]),
                                  content_hash=content_hash(record.content),
                                  embedder=index.embedder.name)])
    others: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in data.passages:
        others[(p.family, p.lang)] += [e for e in p.entities
                                       if e not in others[(p.family, p.lang)]]
    hits: dict[str, dict[str, list[tuple[bool, bool]]]] = defaultdict(lambda: defaultdict(list))
    asked = [q for q in data.questions if q.expected is not None and q.entity in q.text]
    progress(f"{len(asked)} follow-ups")
    for q in asked:
        follow = q.text.replace(q.entity, _pronoun(q.lang))
        chat = [("user", _opener(q.entity, q.lang)), ("assistant", "..."), ("user", follow)]
        other = next((e for e in others[(q.family, q.lang)] if e != q.entity), None)
        cases = {"follow_up_alone": follow,
                 "follow_up_standalone": standalone_question(chat, 2000),
                 "whole_question": q.text}
        if other is not None:
            cases["topic_change_standalone"] = standalone_question(
                [("user", _opener(other, q.lang)), ("assistant", "..."), ("user", q.text)],
                2000)
        for case, text in cases.items():
            found = [h.source_id for h in index.search(text, k)]
            hit = (bool(found) and found[0] == q.source_id, q.source_id in found)
            hits[case][q.lang].append(hit)
            hits[case]["all"].append(hit)
    index.close()
    result: dict[str, Any] = {"bench": "followup", "questions": len(asked), "k": k}
    for case, by_lang in hits.items():
        for lang, flags in by_lang.items():
            suffix = "" if lang == "all" else f"_{lang}"
            result[f"{case}_at_1{suffix}"] = round(sum(a for a, _ in flags) / len(flags), 3)
            result[f"{case}_at_k{suffix}"] = round(sum(b for _, b in flags) / len(flags), 3)
    result["environment"] = environment()
    emit(result)


if __name__ == "__main__":
    main()
