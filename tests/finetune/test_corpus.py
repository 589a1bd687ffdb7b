"""CorpusStore and ReplayBuffer: durable, idempotent, cycles, deletions, held-out questions."""

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from kinject.finetune.corpus import CorpusStore
from kinject.finetune.replay import ReplayBuffer
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Chunk, Record, TrainingExample, content_hash


def _chunks(source_id: str, text: str, kind: str = "text") -> list[Chunk]:
    record = Record(source_id=source_id, kind=kind, content=text.encode())
    return list(ingest_record(record, IngestConfig(ocr_engine="none")).chunks)


PEOPLE = {
    "kb/ada": "Ada Lind was born in 1990 in Osk. She works for Tallow Labs.",
    "kb/tom": "Tom Hale was born in 1971 in Fenwick. He works for Harbour Board.",
    "kb/li": "李明出生于1985年，在大理长大。他在华为公司工作。",
}


@pytest.fixture()
def store(tmp_path: Path) -> CorpusStore:
    s = CorpusStore(tmp_path / "corpus.sqlite3")
    yield s
    s.close()


def test_chunks_become_examples_with_lineage_and_cycle(store: CorpusStore) -> None:
    added = store.add_chunks(_chunks("kb/ada", PEOPLE["kb/ada"]))
    examples = store.examples()
    assert added == len(examples) > 5
    assert {e.source_id for e in examples} == {"kb/ada"}
    assert all(e.cycle == 1 and e.chunk_id for e in examples)
    assert {"passage", "cloze", "rephrase"} <= {e.form for e in examples}


def test_adding_the_same_chunks_again_changes_nothing(store: CorpusStore) -> None:
    chunks = _chunks("kb/ada", PEOPLE["kb/ada"]) + _chunks("kb/tom", PEOPLE["kb/tom"])
    store.add_chunks(chunks)
    before = store.examples()
    manifest = store.manifest(before)
    store.next_cycle()
    assert store.add_chunks(chunks) == 0  # a replayed chunk event
    after = store.examples()
    assert [e.example_id for e in after] == [e.example_id for e in before]
    assert all(e.cycle == 1 for e in after)  # the first cycle it was seen in is kept
    assert store.manifest(after) == manifest


def test_raft_examples_draw_distractors_from_other_sources(store: CorpusStore) -> None:
    store.add_chunks(_chunks("kb/tom", PEOPLE["kb/tom"]))
    store.add_chunks(_chunks("kb/ada", PEOPLE["kb/ada"]))
    raft = [e for e in store.examples() if e.form == "raft" and e.source_id == "kb/ada"]
    assert raft
    assert any("Tom Hale" in e.prompt or "Fenwick" in e.prompt or "Harbour" in e.prompt
               for e in raft)


def test_cycles_and_new_since(store: CorpusStore) -> None:
    assert store.current_cycle() == 1
    store.add_chunks(_chunks("kb/ada", PEOPLE["kb/ada"]))
    n1 = store.count()
    assert store.new_since(0) == n1 and store.new_since(1) == 0
    assert store.next_cycle() == 2 and store.current_cycle() == 2
    store.add_chunks(_chunks("kb/tom", PEOPLE["kb/tom"]))
    assert store.new_since(1) == store.count() - n1 > 0
    assert {e.source_id for e in store.examples(cycles=[2])} == {"kb/tom"}
    assert {e.source_id for e in store.examples(cycles=[1])} == {"kb/ada"}
    assert {e.source_id for e in store.examples(exclude_sources=["kb/ada"])} == {"kb/tom"}


def test_the_store_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "corpus.sqlite3"
    with CorpusStore(path) as s:
        s.add_chunks(_chunks("kb/li", PEOPLE["kb/li"]))
        s.next_cycle()
        ids = [e.example_id for e in s.examples()]
    with CorpusStore(path) as s:
        assert [e.example_id for e in s.examples()] == ids
        assert s.current_cycle() == 2
        assert {e.lang for e in s.examples()} == {"zh"}


def test_deleting_a_source_removes_its_examples_and_questions(store: CorpusStore) -> None:
    for sid, text in PEOPLE.items():
        store.add_chunks(_chunks(sid, text))
    removed = store.remove_source("kb/tom")
    assert removed > 0
    assert "kb/tom" not in store.sources_of(store.examples())
    assert all(q.source_id != "kb/tom" for q in store.qa_pairs())
    assert store.remove_source("kb/tom") == 0


def test_a_deleted_text_leaves_the_raft_examples_that_held_it_as_a_distractor(
        tmp_path: Path) -> None:
    rows = {f"kb/p{i}": f"name: Person {i}\ncity: City{i}\nemployer: Guild{i}"
            for i in range(6)}
    with CorpusStore(tmp_path / "corpus.sqlite3") as store:
        for sid, text in rows.items():  # one structured row per source, as a table gives
            store.add_chunks([Chunk(chunk_id=content_hash(sid, text), doc_id=sid,
                                    source_id=sid, text=text, kind="csv")])
        store.next_cycle()
        replay = ReplayBuffer(store, capacity=1000, seed=0)
        replay.offer(store.examples())

        def holding(name: str) -> list[TrainingExample]:
            return [e for e in store.examples() if e.form == "raft" and name in e.prompt]

        victim = "Person 3"
        held = holding(victim)
        assert held and {e.source_id for e in held} - {"kb/p3"}  # others carry it
        before = {e.example_id: e for e in store.examples()}
        store.remove_source("kb/p3")
        # the deleted row is nowhere in the corpus, not even as a wrong passage
        assert not any(victim in e.prompt or victim in e.completion for e in store.examples())
        assert all("City3" not in e.prompt for e in store.examples())
        after = {e.example_id: e for e in store.examples()}
        # the examples that held it are rebuilt, not lost: same ids, same cycle, new passages
        for e in held:
            if e.source_id == "kb/p3":
                continue
            assert e.example_id in after and after[e.example_id].cycle == e.cycle == 1
            assert after[e.example_id].completion == e.completion
        # everything else is untouched; the reservoir still points at the rebuilt examples
        assert {k for k in before if before[k].source_id != "kb/p3"} == set(after)
        assert all(after[k] == before[k] for k in after
                   if before[k].form != "raft" or victim not in before[k].prompt)
        assert {e.example_id for e in replay.examples()} == set(after)


def test_an_upsert_takes_the_old_text_out_of_other_chunks_distractors(
        store: CorpusStore) -> None:
    store.replace_source("kb/fee", _chunks("kb/fee", "The ferry fee is 9 marks."))
    for sid, text in PEOPLE.items():
        store.replace_source(sid, _chunks(sid, text))
    assert any("9 marks" in e.prompt for e in store.examples() if e.source_id != "kb/fee")
    store.replace_source("kb/fee", _chunks("kb/fee", "The ferry fee is 12 marks."))
    assert not any("9 marks" in e.prompt or "9 marks" in e.completion
                   for e in store.examples())


def test_an_upsert_replaces_a_sources_examples(store: CorpusStore) -> None:
    store.replace_source("kb/fee", _chunks("kb/fee", "The ferry fee is 9 marks."))
    added, removed = store.replace_source("kb/fee", _chunks("kb/fee", "The ferry fee is 12 marks."))
    assert added > 0 and removed > 0
    texts = " ".join(e.completion for e in store.examples())
    assert "12" in texts and "9 marks" not in texts


def test_manifest_is_a_content_hash_of_the_set(store: CorpusStore) -> None:
    store.add_chunks(_chunks("kb/ada", PEOPLE["kb/ada"]))
    ex = store.examples()
    assert store.manifest(ex) == store.manifest(list(reversed(ex)))
    assert store.manifest(ex) != store.manifest(ex[:-1])
    assert store.sources_of(ex) == {"kb/ada"}


def test_held_out_questions_are_kept_out_of_training(store: CorpusStore) -> None:
    for sid, text in PEOPLE.items():
        store.add_chunks(_chunks(sid, text))
    store.add_chunks(_chunks("db/staff", "name,city\nIda Brook,Fenwick\n", kind="csv"))
    held = store.qa_pairs()
    assert {q.source_id for q in held} == {*PEOPLE, "db/staff"}
    assert {q.lang for q in held} == {"en", "zh"}
    prompts = [e.prompt for e in store.examples()]
    for q in held:
        assert all(q.question not in p for p in prompts)
    trained = store.qa_pairs(held_out=False)
    assert {q.answer for q in trained} == {q.answer for q in held}
    assert all(any(q.question in p for p in prompts) for q in trained)
    assert {q.cycle for q in store.qa_pairs(cycles=[1])} == {1}


def _fake(i: int, source: str = "s") -> TrainingExample:
    return TrainingExample(example_id=f"e{i}", chunk_id=f"c{i}", source_id=f"{source}{i % 7}",
                           prompt="", completion=f"text {i}")


def _stored(store: CorpusStore, examples: list[TrainingExample]) -> None:
    with store.transaction() as db:
        for n, e in enumerate(examples):
            db.execute("INSERT INTO examples VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (e.example_id, e.chunk_id, e.source_id, e.prompt, e.completion, e.form,
                        e.cycle, e.lang, n))


def test_replay_reservoir_is_uniform_over_everything_offered(tmp_path: Path) -> None:
    hits: Counter[int] = Counter()
    offered = [_fake(i) for i in range(400)]
    for trial in range(30):
        with CorpusStore(tmp_path / f"r{trial}.sqlite3") as s:
            _stored(s, offered)
            buf = ReplayBuffer(s, capacity=40, seed=trial)
            for start in range(0, 400, 50):  # offered cycle by cycle
                buf.offer(offered[start:start + 50])
            assert len(buf) == 40 and buf.seen == 400
            for e in buf.examples():
                hits[int(e.example_id[1:]) // 100] += 1
    # each quarter of the stream should hold about a quarter of the 30 * 40 slots
    shares = [hits[q] / 1200 for q in range(4)]
    assert all(0.18 < s < 0.32 for s in shares), shares


def test_replay_reservoir_is_durable_and_forgets_deleted_sources(tmp_path: Path) -> None:
    path = tmp_path / "corpus.sqlite3"
    offered = [_fake(i) for i in range(100)]
    with CorpusStore(path) as s:
        _stored(s, offered)
        buf = ReplayBuffer(s, capacity=20, seed=1)
        buf.offer(offered)
        held = [e.example_id for e in buf.examples()]
    with CorpusStore(path) as s:
        buf = ReplayBuffer(s, capacity=20, seed=1)
        assert [e.example_id for e in buf.examples()] == held and buf.seen == 100
        assert buf.offer(offered) == 0  # already held ones are not offered twice
        s.remove_source("s3")
        assert all(e.source_id != "s3" for e in buf.examples())
        assert len(buf.sample(5)) == 5
        assert len(buf.sample(500)) == len(buf)


def test_replay_catches_up_on_cycles_no_promotion_offered(tmp_path: Path) -> None:
    """An adapter activated by hand was never offered to the reservoir by a promotion: the
    next cycle's catch-up offers its cycles' examples, once."""
    with CorpusStore(tmp_path / "corpus.sqlite3") as s:
        first = [dataclasses.replace(_fake(i), cycle=1) for i in range(30)]
        _stored(s, [*first, *(dataclasses.replace(_fake(i), cycle=2) for i in range(30, 40))])
        buf = ReplayBuffer(s, capacity=100, seed=0)
        assert buf.examples() == []
        assert buf.catch_up(1) == 30
        assert {e.example_id for e in buf.examples()} == {e.example_id for e in first}
        assert buf.catch_up(1) == 0 and buf.seen == 30  # remembered: nothing offered twice
        assert buf.catch_up(0) == 0



def test_examples_written_while_a_job_takes_the_corpus_join_the_next_cycle(
        tmp_path: Path) -> None:
    """The materialiser read the current cycle before its write transaction. A training job
    (another process) that closed that cycle in between, and read it, left the write
    labelled with the closed cycle: after the job it was promoted, the next one trains the
    cycles after it, so those examples never reached an adapter."""
    import threading

    from _wait import until

    path = tmp_path / "corpus.sqlite3"
    with CorpusStore(path) as materialiser, CorpusStore(path) as job:
        statements: list[str] = []  # what the materialiser's connection has started to run
        materialiser._db.set_trace_callback(statements.append)
        with job.transaction() as db:  # the job holds the write lock while it closes cycle 1
            writer = threading.Thread(target=materialiser.replace_source, args=(
                "kb/late", _chunks("kb/late", "The ferry to Tarn leaves at nine.")))
            writer.start()
            until(lambda: "BEGIN IMMEDIATE" in statements, 30,
                  "the materialiser waiting for the write lock")
            job._set(db, "cycle", "2")
        writer.join(timeout=60)
        assert not writer.is_alive()
        assert job.examples(cycles=[1]) == []  # what the job trains on: taken already
        late = job.examples(cycles=[2])
        assert late and {e.source_id for e in late} == {"kb/late"}
