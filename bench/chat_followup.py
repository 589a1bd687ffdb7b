"""Follow-up questions in a chat, scored on the ANSWERS of POST /v1/chat/completions of a live
`kinject serve` (records published through the API and Kafka, default models, read mode).

Data: bench/rag_data's invented entities, the families of the chosen split (dev families to
tune on, test families held out), English and Chinese. The conversations are written by
per-split generators (openers and pronouns below differ between dev and test). For each
answerable question that names its entity E, three kinds of follow-up:

    whole:    user: <opener about E>     assistant: ...   user: <the question, naming E>
    pronoun:  user: <opener about E>     assistant: ...   user: <the question, E -> "it"/"它">
    switch:   user: <a question about another entity of E's family>   ...   user: <the question>
    unknown:  user: <opener about an entity of the family>   ...   user: <a question about an
              entity no passage holds> (right: the answer abstains)

Each conversation is asked three ways (the arms):

    alone:  the last user turn only (what a chat without memory would ask)
    joined: one user message holding the earlier user turns and the last one, joined by a
            newline (what the chat endpoint read before this bench: the reader answered the
            first question it saw)
    chat:   the conversation as it is (the reader reads the last turn; earlier user turns help
            retrieval and name what a follow-up that names nothing asks about)

An answer is right when it holds the expected value and none of the competing ones
(rag_data.dataset.is_right).

    python bench/chat_followup.py --split dev --quick --threads 1   # a few minutes

The last stdout line is one JSON object: accuracy per arm and kind, each also per language
(``<arm>_<kind>``, ``<arm>_<kind>_en``, ``<arm>_<kind>_zh``).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import tempfile
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from _common import emit, environment, parse_args, progress, publish_and_wait, use_threads  # noqa: E402
from rag_data.dataset import FULL, QUICK, Passage, Question, build, is_right  # noqa: E402
from rag_data.families import DEV, TEST, Family  # noqa: E402
from rag_data.questions import ask as ask_about  # noqa: E402

ARMS = ("alone", "joined", "chat")
KINDS = ("whole", "pronoun", "switch", "unknown")
ABSTAINED = ("Not in the knowledge base.", "知识库中没有相关内容。")
ANSWER = "..."  # the assistant's turn: the chat endpoint reads no assistant turn

# The conversation generators, one per split: tune only on dev's.
OPENERS = {
    "dev": {"en": ["Tell me about {e}.", "What do you know about {e}?"],
            "zh": ["介绍一下{e}。", "你知道{e}吗？"]},
    "test": {"en": ["I'd like to learn about {e}.", "Can you describe {e} for me?"],
             "zh": ["我想了解一下{e}。", "请给我讲讲{e}。"]},
}
PRONOUNS = {"dev": {"en": "it", "zh": "它"}, "test": {"en": "that", "zh": "那个"}}


def _pronoun_form(q: Question, split: str) -> str | None:
    """The question with its entity's name replaced by the split's pronoun (None when the
    question does not write the name as it is)."""
    if q.entity not in q.text:
        return None
    entity = q.entity
    if q.lang == "en" and f"the {entity}" in q.text:  # "the it" is no English
        entity = f"the {entity}"
    text = q.text.replace(entity, PRONOUNS[split][q.lang])
    return text[:1].upper() + text[1:]


def conversations(questions: list[Question], ghosts: list[Question],
                  passages: tuple[Passage, ...],
                  families: tuple[Family, ...], split: str, seed: int
                  ) -> list[tuple[Question, str, list[str]]]:
    """(question, kind, the user turns) for every follow-up asked. The switch's earlier turn
    asks another relation of another entity of the family (rag_data's phrasings)."""
    rng = random.Random(f"{seed}/chat-followup/{split}")
    entities: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in passages:
        entities[(p.family, p.lang)] += [e for e in p.entities
                                         if e not in entities[(p.family, p.lang)]]
    family_of = {f.name: f for f in families}
    out: list[tuple[Question, str, list[str]]] = []
    for q in questions:
        opener = rng.choice(OPENERS[split][q.lang]).format(e=q.entity)
        out.append((q, "whole", [opener, q.text]))
        pronoun = _pronoun_form(q, split)
        if pronoun is not None:
            out.append((q, "pronoun", [opener, pronoun]))
        others = [e for e in entities[(q.family, q.lang)] if e != q.entity]
        relations = [r for r in family_of[q.family].relations if r != q.relation]
        if others and relations:
            earlier = ask_about(q.family, rng.choice(relations), q.lang, rng.choice(others),
                                rng)
            out.append((q, "switch", [earlier, q.text]))
    for q in ghosts:
        known = entities[(q.family, q.lang)]
        if known:
            opener = rng.choice(OPENERS[split][q.lang]).format(e=rng.choice(known))
            out.append((q, "unknown", [opener, q.text]))
    return out


def messages_of(arm: str, users: list[str]) -> list[dict[str, str]]:
    if arm == "alone":
        return [{"role": "user", "content": users[-1]}]
    if arm == "joined":
        return [{"role": "user", "content": "\n".join(users)}]
    out: list[dict[str, str]] = []
    for turn in users[:-1]:
        out += [{"role": "user", "content": turn}, {"role": "assistant", "content": ANSWER}]
    return [*out, {"role": "user", "content": users[-1]}]


def ask(c: httpx.Client, key: str, messages: list[dict[str, str]]) -> str:
    r = c.post("/v1/chat/completions", json={"model": "kinject", "messages": messages},
               headers={"Authorization": f"Bearer {key}"})
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ARMS:
        for kind in KINDS:
            for lang in ("all", "en", "zh"):
                got = [r["right"] for r in rows if r["arm"] == arm and r["kind"] == kind
                       and lang in ("all", r["lang"])]
                suffix = "" if lang == "all" else f"_{lang}"
                out[f"{arm}_{kind}{suffix}"] = round(sum(got) / len(got), 3) if got else None
    return out


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--split", choices=("dev", "test"), default="test",
                       help="test (held out, never tuned on) or dev")
        p.add_argument("--threads", type=int, default=None, help="1 on busy cores")
        p.add_argument("--generator", default="smollm2")

    args = parse_args(__doc__ or "", extra=extra, repeats=(1, 1))
    use_threads(args.threads)
    families = DEV if args.split == "dev" else TEST
    data = build(args.seed, QUICK if args.quick else FULL, families=families)
    names = {f.name for f in families}
    asked = [q for q in data.questions if q.expected is not None and q.family in names
             and q.entity in q.text]
    ghosts = [q for q in data.questions if q.expected is None and q.family in names]
    chats = conversations(asked, ghosts, data.passages, families, args.split, args.seed)
    docs = {p.source_id: p.text for p in data.passages}
    from ask_load import start_server

    key = "bench-" + secrets.token_urlsafe(16)
    server_args = types.SimpleNamespace(embedder="minilm", generator=args.generator)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kinject-bench-chat-") as tmp:
        progress(f"starting kinject serve; {len(docs)} passages, {len(chats)} follow-ups x "
                 f"{len(ARMS)} arms")
        url, stop, thread = start_server(Path(tmp), server_args, key, {})  # type: ignore[arg-type]
        try:
            publish_and_wait(url, key, docs)
            with httpx.Client(base_url=url, timeout=600) as c:
                for q, kind, users in chats:
                    for arm in ARMS:
                        answer = ask(c, key, messages_of(arm, users))
                        right = (answer.startswith(ABSTAINED) if q.expected is None
                                 else is_right(answer, q))
                        rows.append({"arm": arm, "kind": kind, "lang": q.lang,
                                     "family": q.family, "right": right})
                        progress(f"{kind:7} {arm:6} {'ok' if right else 'NO'} "
                                 f"{users[-1][:50]!r} -> {answer[:60]!r}")
        finally:
            stop.set()
            thread.join(60)
    emit({"bench": "chat_followup", "split": args.split, "quick": args.quick,
          "follow_ups": len(chats), **figures(rows), "environment": environment()})


if __name__ == "__main__":
    main()
