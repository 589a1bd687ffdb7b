"""What the reader makes of the model's raw replies, by their shape alone (no model here):
the name a question asks about when the model copies it and then runs on, and a shouted
one-word reply; the sentences that describe what a question names, and a reply cut by the
token limit."""

from kinject.rag.reader import _names, _sentence_case
from kinject.rag.reader_subject import could_name, kept_name, past_copy
from kinject.rag.reader_text import _copied_prefix, _describe, _whole_sentences


def test_a_name_copy_that_runs_on_into_an_answer_keeps_only_the_copied_start() -> None:
    question = "青龙水库每天放水多少吨？"
    name = _copied_prefix("青龙水库每天放水约3000吨", question)
    assert name == "青龙水库每天放水"
    # Kept as a name, it still tells the asked reservoir from a namesake.
    assert _names(name, "青龙水库建于1978年，每天放水约两千吨。", question)
    assert not _names(name, "黑石水库建于1978年，每天放水约两千吨。", question)
    english = "Which year did the Orla Vance library open?"
    assert _copied_prefix("Orla Vance library opened in 1910.", english) == "Orla Vance library"


def test_a_reply_that_copies_nothing_of_the_question_names_nothing() -> None:
    assert _copied_prefix("About forty minutes.", "How long is the crossing to Kell?") == ""
    assert _copied_prefix("Orla Vance library", "Which year did the Orla Vance library open?"
                          ) == "Orla Vance library"


def test_a_name_copy_is_stopped_where_it_runs_on_and_keeps_the_same_name() -> None:
    """The model's copy of the name is stopped at the first word that is no longer the
    question's (nothing after it could change the name kept), never while it still copies."""
    for question, reply, name in [
            ("青龙水库每天放水多少吨？", "青龙水库每天放水约3000吨，全年不停。",
             "青龙水库每天放水"),
            ("Which year did the Orla Vance library open?",
             "The Orla Vance library opened in 1910 after a gift.", "The Orla Vance library")]:
        stop = next(end for end in range(1, len(reply) + 1) if past_copy(reply[:end], question))
        assert stop < len(reply) - 5, reply[:stop]
        assert kept_name(reply[:stop], question) == kept_name(reply, question) == name
    question = "How many bolts hold the Brennick radio mast together?"
    assert not any(past_copy("Brennick radio mast"[:end], question) for end in range(1, 20))
    assert past_copy("NONE", question) and kept_name("NONE", question) is None


def test_only_a_question_with_a_word_shaped_as_a_name_could_have_one_copied() -> None:
    assert could_name("Who repairs clocks in Veldhaven?")
    assert could_name("What does the K7 cost?") and could_name("渡鸦河有多长？")
    # Capitalised only as its first word, or no capital at all: nothing a copy could keep.
    assert not could_name("What does it cost to keep a dinghy in the marina for one night?")
    assert not could_name("Which mode string passed to open() lets me read a file?")
    assert kept_name("dinghy", "What does it cost to keep a dinghy in the marina?") is None


def test_a_shouted_one_word_reply_is_written_as_a_word() -> None:
    unit = "The Corran ferry does not run on Sundays."
    assert _sentence_case("YES", unit) == "Yes"
    assert _sentence_case("NO.", unit) == "No"
    # A code or acronym the passage itself writes in capitals stays as written.
    assert _sentence_case("RNLI", "Boats are checked by the RNLI every spring.") == "RNLI"
    assert _sentence_case("No", unit) == "No"
    assert _sentence_case("Sunday", unit) == "Sunday"


def test_a_description_is_the_passages_sentences_about_what_is_named() -> None:
    unit = ("Ferries leave from pier 4. The Corran ferry is a blue car ferry built in 2004. "
            "It crosses in ten minutes. Tickets are sold on board.")
    question = "What is the Corran ferry?"
    assert _describe(unit, "Corran ferry", question) == (
        "The Corran ferry is a blue car ferry built in 2004. It crosses in ten minutes.")
    zh = "渡口在四号码头。科兰渡轮是一艘蓝色汽车渡轮，建于2004年。航程十分钟。船上售票。"
    assert _describe(zh, "科兰渡轮", "科兰渡轮是什么？") == (
        "科兰渡轮是一艘蓝色汽车渡轮，建于2004年。航程十分钟。")
    record = "Name: Corran ferry\nBuilt: 2004\nCrossing: ten minutes"
    assert _describe(record, "Corran ferry", question) == (
        "Name: Corran ferry; Built: 2004; Crossing: ten minutes")


def test_a_reply_cut_by_the_token_limit_ends_at_its_last_whole_sentence() -> None:
    assert _whole_sentences("It was built in 1872. Its beam reaches 22 miles. Seals") == (
        "It was built in 1872. Its beam reaches 22 miles.")
    assert _whole_sentences("It was built in 1872") == "It was built in 1872"
    assert _whole_sentences("建于1872年。灯光可照") == "建于1872年。"


def test_prose_whose_lines_wrap_is_described_by_its_sentences_not_as_a_record() -> None:
    # A text file's lines wrap mid-sentence; read as a record, "What is the Halyard portal?"
    # was answered with the whole chunk joined by "; " ("refunded up; to 45 euros") and cut
    # mid-word, and "深圳办公室在哪里？" with the whole document, its title first.
    unit = ("## Expenses\n\nTravel must be booked through the Halyard portal. Meals on a work "
            "trip are refunded up\nto 45 euros a day. Receipts go to Tomasz Wieczorek in finance"
            " within 30 days.\n\n## Equipment\n\nEvery new engineer receives a laptop.")
    assert _describe(unit, "Halyard portal", "What is the Halyard portal?") == (
        "Travel must be booked through the Halyard portal. Meals on a work trip are refunded "
        "up to 45 euros a day.")
    zh = ("塔洛米尔机器人公司深圳办公室\n\n"
          "深圳办公室位于南山区科技园，于2019年开设。办公室主任是林晓雯。\n"
          "深圳团队负责Gudgeon G1扫描仪的生产测试。\n员工食堂每天中午十一点半开放。")
    assert _describe(zh, "深圳办公室", "深圳办公室在哪里？") == (
        "深圳办公室位于南山区科技园，于2019年开设。办公室主任是林晓雯。")


def test_a_long_record_is_described_by_whole_fields() -> None:
    record = "\n".join(f"field{i}: value number {i} of a long record" for i in range(12))
    described = _describe(record, None, "What is it?")
    assert described.endswith("of a long record")
    assert described.startswith("field0: value number 0 of a long record; field1:")


def test_a_passage_that_writes_the_maker_in_the_possessive_still_names_the_product() -> None:
    """"Orrin Marine's V2 kayak" names the "Orrin Marine V2 kayak": without it the one
    passage that answers was never read and the question was abstained on."""
    question = "How heavy is the Orrin Marine V2 kayak?"
    passage = "Orrin Marine's V2 kayak weighs 19 kg and seats one paddler."
    assert _names("Orrin Marine V2 kayak", passage, question)
    assert not _names("Orrin Marine V3 kayak", passage, "How heavy is the Orrin Marine V3 kayak?")
