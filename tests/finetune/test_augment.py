"""The example builder: several forms per fact, English and Chinese, held-out phrasings."""

import json
from pathlib import Path

import pytest

from kinject.finetune.augment import (
    MAX_PHRASINGS,
    AugmentConfig,
    build_examples,
    eval_questions,
    train_questions,
)
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Chunk, Record


def _chunks(record: Record) -> list[Chunk]:
    return list(ingest_record(record, IngestConfig(ocr_engine="none")).chunks)


@pytest.fixture(scope="module")
def english() -> Chunk:
    return _chunks(Record(source_id="kb/ada", kind="text", content=(
        b"Ada Lind was born on March 2, 1990 in Osk. She studied physics at Marrow "
        b"University. Her employer is Tallow Labs.")))[0]


@pytest.fixture(scope="module")
def chinese() -> Chunk:
    return _chunks(Record(source_id="kb/li", kind="text", content=(
        "李明出生于1985年，在大理长大。他毕业于清华大学，现在在华为公司工作。".encode())))[0]


@pytest.fixture(scope="module")
def csv_row() -> Chunk:
    table = b"name,born,city,employer\nIda Brook,1971,Fenwick,Harbour Board\n"
    return _chunks(Record(source_id="kb/staff", kind="csv", content=table))[0]


def _by_form(examples: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in examples:
        out.setdefault(e.form, []).append(e)
    return out


def test_english_text_gets_every_form(english: Chunk) -> None:
    forms = _by_form(build_examples(english, ["Tom Hale keeps the lighthouse at Gullspire."]))
    assert set(forms) == {"passage", "rephrase", "permute", "qa", "cloze", "raft"}
    assert forms["passage"][0].completion == english.text and forms["passage"][0].prompt == ""
    # full-name repetition: the pronouns became the name
    assert "Ada Lind studied physics" in forms["rephrase"][0].completion
    assert "Ada Lind's employer" in forms["rephrase"][0].completion
    # permutations keep every sentence and change the order
    resolved = forms["rephrase"][0].completion
    assert len(forms["permute"]) == 2
    for p in forms["permute"]:
        assert p.completion != resolved
        assert sorted(p.completion.rstrip(".").split(". ")) == sorted(
            resolved.rstrip(".").split(". "))
    answers = {e.completion for e in forms["cloze"]}
    assert {"Osk", "Marrow University", "Tallow Labs", "March 2, 1990"} <= answers
    for e in forms["cloze"]:
        assert "____" in e.prompt and e.completion not in e.prompt


def test_raft_examples_quote_the_right_passage_among_distractors(english: Chunk) -> None:
    distractors = ["Tom Hale keeps the lighthouse at Gullspire.", "The ferry fee is 9 marks.",
                   "Ida Brook was born in Fenwick."]
    for wrong in (1, 2):
        raft = _by_form(build_examples(english, distractors,
                                       config=AugmentConfig(distractors=wrong)))["raft"]
        assert len(raft) == 2
        assert len({e.prompt.rsplit("Question:", 1)[1] for e in raft}) == 2  # two questions
        for e in raft:
            answer, marker = e.completion.rsplit(" ", 1)
            n = int(marker.strip("[]"))
            passages = [line for line in e.prompt.splitlines() if line.startswith("[")]
            assert len(passages) == 1 + wrong  # the right one and the distractors
            assert answer in passages[n - 1]  # the answer is quoted from passage [n]
            assert sum(answer in p for p in passages) == 1
            assert "Question:" in e.prompt


def test_raft_examples_are_asked_in_the_rag_readers_own_prompt(english: Chunk,
                                                                 tiny_lm_dir: Path) -> None:
    """What the adapter learns to read is token for token what the RAG service shows it:
    the reader's system prompt and its fenced, numbered passages."""
    from transformers import AutoTokenizer

    from kinject.finetune.batches import render
    from kinject.rag.prompt import rag_messages

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    raft = _by_form(build_examples(english, ["Tom Hale keeps the lighthouse at Gullspire.",
                                             "Ida Brook was born in Fenwick."]))["raft"]
    for e in raft:
        question = e.prompt.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")
        body = e.prompt.split("\n\nQuestion:")[0]
        passages = [line.split("] ", 1)[1].strip('"') for line in body.splitlines()
                    if line.startswith("[")]
        asked = tok.apply_chat_template(rag_messages(question, passages), tokenize=False,
                                        add_generation_prompt=True)
        prefix, learnt = render(tok, e)
        assert prefix == asked
        assert learnt.startswith(e.completion)


def test_closed_book_questions_are_trained_and_evaluated_as_the_service_asks(
        csv_row: Chunk, tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    from kinject.finetune.batches import render
    from kinject.finetune.evaluate import question_prompt
    from kinject.rag.prompt import closed_book_messages

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    qa = next(e for e in build_examples(csv_row) if e.form == "qa")
    asked = tok.apply_chat_template(closed_book_messages(qa.prompt), tokenize=False,
                                    add_generation_prompt=True)
    assert render(tok, qa)[0] == asked == question_prompt(tok, qa.prompt)


def test_chinese_text_gets_cloze_questions_in_chinese(chinese: Chunk) -> None:
    forms = _by_form(build_examples(chinese))
    assert forms["passage"][0].lang == "zh"
    assert "李明毕业于清华大学" in forms["rephrase"][0].completion  # 他 -> 李明
    answers = {e.completion for e in forms["cloze"]}
    assert {"1985年", "清华大学", "华为公司"} <= answers
    assert all(e.prompt.startswith(("填空", "请补全", "空白")) for e in forms["cloze"])


def test_structured_rows_get_field_templates(csv_row: Chunk) -> None:
    forms = _by_form(build_examples(csv_row))
    qa = {(e.prompt, e.completion) for e in forms["qa"]}
    assert ("What is the city of Ida Brook?", "Fenwick") in qa
    assert ("Tell me the employer of Ida Brook.", "Harbour Board") in qa
    assert all("name" not in p for p, _ in qa)  # the subject is not asked about
    rephrased = forms["rephrase"]
    assert len(rephrased) == AugmentConfig().rephrasings
    assert "Ida Brook's" in " ".join(r.completion for r in rephrased)
    assert all("1971" in r.completion and "Fenwick" in r.completion for r in rephrased)


def test_sql_and_json_rows_in_chinese() -> None:
    row = _chunks(Record(source_id="db/1", kind="sql", meta={"table": "人员"},
                         content=json.dumps({"姓名": "王芳", "城市": "杭州", "年份": 1990},
                                            ensure_ascii=False).encode()))[0]
    qa = {(e.prompt, e.completion) for e in build_examples(row) if e.form == "qa"}
    assert ("王芳的城市是什么？", "杭州") in qa
    item = _chunks(Record(source_id="j/1", kind="json", content=json.dumps(
        {"name": "Osk Ferry", "fee": {"adult": 9}}).encode()))[0]
    qa = {(e.prompt, e.completion) for e in build_examples(item) if e.form == "qa"}
    assert ("What is the fee adult of Osk Ferry?", "9") in qa


def test_held_out_questions_use_a_phrasing_no_training_example_uses(
    english: Chunk, chinese: Chunk, csv_row: Chunk
) -> None:
    for chunk in (english, chinese, csv_row):
        trained = build_examples(chunk, ["Some other passage about the harbour."])
        prompts = {e.prompt for e in trained}
        held = eval_questions(chunk)
        assert held and len(held) == len(train_questions(chunk))
        for q in held:
            assert q.question not in prompts
            assert not any(q.question in p for p in prompts)
            assert q.answer in chunk.text and q.source_id == chunk.source_id


def test_example_ids_are_stable_and_unique(english: Chunk) -> None:
    a = build_examples(english, ["x y z."])
    b = build_examples(english, ["x y z."])
    assert [e.example_id for e in a] == [e.example_id for e in b]
    assert len({e.example_id for e in a}) == len(a)


def test_config_controls_the_number_of_forms(english: Chunk) -> None:
    few = build_examples(english, config=AugmentConfig(permutations=0, qa_per_fact=1,
                                                       raft_per_chunk=0))
    many = build_examples(english, ["Other text here."])
    assert len(few) < len(many)
    assert not any(e.form in ("permute", "raft") for e in few)
    with pytest.raises(ValueError, match="qa_per_fact"):
        AugmentConfig(qa_per_fact=0)
    with pytest.raises(ValueError, match="qa_per_fact"):
        AugmentConfig(qa_per_fact=MAX_PHRASINGS + 1)


def test_each_fact_is_taught_in_several_distinct_phrasings(csv_row: Chunk,
                                                          english: Chunk) -> None:
    for chunk in (csv_row, english):
        for n in range(1, MAX_PHRASINGS + 1):
            examples = build_examples(chunk, config=AugmentConfig(qa_per_fact=n))
            per_answer: dict[str, set[str]] = {}
            for e in examples:
                if e.form in ("qa", "cloze"):
                    per_answer.setdefault(e.completion, set()).add(e.prompt)
            assert per_answer and all(len(p) >= n for p in per_answer.values())
    rows = [e.completion for e in build_examples(csv_row, config=AugmentConfig(rephrasings=4))
            if e.form == "rephrase"]
    assert len(set(rows)) == 4 and all("Harbour Board" in r for r in rows)



def test_named_relations_in_text_become_natural_questions(english: Chunk,
                                                          chinese: Chunk) -> None:
    qa = {(e.prompt, e.completion) for e in build_examples(english) if e.form == "qa"}
    assert {("Where was Ada Lind born?", "Osk"), ("When was Ada Lind born?", "March 2, 1990"),
            ("Where did Ada Lind study?", "Marrow University"),
            ("Who does Ada Lind work for?", "Tallow Labs")} <= qa
    zh = {(e.prompt, e.completion) for e in build_examples(chinese) if e.form == "qa"}
    assert {("李明毕业于哪所学校？", "清华大学"), ("李明是什么时候出生的？", "1985年")} <= zh
    held = {(q.question, q.answer) for q in eval_questions(english) if q.form == "relation"}
    assert ("In which town did Ada Lind come into the world?", "Osk") in held


def test_a_pronoun_refers_to_the_last_person_named() -> None:
    chunk = _chunks(Record(source_id="kb/two", kind="text", content=(
        b"Ada Lind was born in 1990. Tom Hale works for Harbour Board. He lives in Fenwick. "
        b"The Osk ferry was built in 1921.")))[0]
    qa = {(e.prompt, e.completion) for e in build_examples(chunk) if e.form == "qa"}
    assert ("Where does Tom Hale live?", "Fenwick") in qa
    assert ("Who does Tom Hale work for?", "Harbour Board") in qa
    assert not any("Ada Lind" in p and a in ("Fenwick", "1921") for p, a in qa)
    rephrased = next(e for e in build_examples(chunk) if e.form == "rephrase")
    assert "Tom Hale lives in Fenwick" in rephrased.completion
