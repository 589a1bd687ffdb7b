"""What the reader makes of the model's raw replies, by their shape alone (no model here):
the name a question asks about when the model copies it and then runs on, and a shouted
one-word reply."""

from kinject.rag.reader import _copied_prefix, _names, _sentence_case


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


def test_a_shouted_one_word_reply_is_written_as_a_word() -> None:
    unit = "The Corran ferry does not run on Sundays."
    assert _sentence_case("YES", unit) == "Yes"
    assert _sentence_case("NO.", unit) == "No"
    # A code or acronym the passage itself writes in capitals stays as written.
    assert _sentence_case("RNLI", "Boats are checked by the RNLI every spring.") == "RNLI"
    assert _sentence_case("No", unit) == "No"
    assert _sentence_case("Sunday", unit) == "Sunday"
