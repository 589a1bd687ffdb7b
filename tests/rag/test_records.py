"""Table rows read as records, and answers mapped back onto whole spans of what was read."""

from kinject.rag.records import cell, reading_units, snap

TABLE = ("Alpine huts of the Farnhorn range:\n\n"
         "| Hut | Altitude | Beds | Warden |\n|---|---|---|---|\n"
         "| Kessel hut | 2,314 metres (2,314 m) | 46 | Oda Pfeiffer |\n"
         "| Gauli hut | 2,205 metres (2,205 m) | 52 | Urs Zbinden |")


def test_each_table_row_is_read_as_a_record_of_its_own_with_the_caption() -> None:
    units = reading_units(TABLE)
    assert units == [
        "Alpine huts of the Farnhorn range:\nHut: Kessel hut\nAltitude: 2,314 metres (2,314 m)"
        "\nBeds: 46\nWarden: Oda Pfeiffer",
        "Alpine huts of the Farnhorn range:\nHut: Gauli hut\nAltitude: 2,205 metres (2,205 m)"
        "\nBeds: 52\nWarden: Urs Zbinden",
    ]


def test_prose_and_records_stay_whole() -> None:
    prose = "The Kessel hut sleeps 46 climbers | a note with a bar."
    assert reading_units(prose) == [prose]
    record = "hut: Kessel hut\nbeds: 46"
    assert reading_units(record) == [record]


def test_a_piece_of_a_records_value_becomes_the_whole_value() -> None:
    unit = reading_units(TABLE)[1]
    assert snap("2,205 m", unit) == "2,205 metres (2,205 m)"
    assert snap("Zbinden", unit) == "Urs Zbinden"
    assert snap("52", unit) == "52"


def test_answers_keep_whole_words_accents_codes_and_the_passages_unit() -> None:
    assert snap("Valpara í", "In 1990 she moved to Valparaíso for good.") == "Valparaíso"
    assert snap("SETUP", "Pair it with AQN-SETUP-486 first.") == "AQN-SETUP-486"
    assert snap("v2.1", "Install release v2.1.3 or later.") == "v2.1.3"
    assert snap("148 meters", "The mast is 148 m tall.") == "148 m"
    assert snap("4 kilograms", "It weighs 4 kg empty.") == "4 kg"
    assert snap("青屏", "渡鸦河发源于青屏山。") == "青屏"  # Chinese has no word spaces to grow to


def test_an_answer_not_in_the_text_is_left_alone() -> None:
    assert snap("Yes", "The Kessel hut sleeps 46.") == "Yes"
    assert snap("148 feet", "The mast is 148 m tall.") == "148 feet"


def test_a_fields_name_given_as_the_answer_means_its_value() -> None:
    unit = reading_units(TABLE)[0]
    assert snap("Warden", unit) == "Oda Pfeiffer"


def test_a_gloss_in_brackets_brings_what_it_glosses_and_a_price_its_currency() -> None:
    prose = "Sworn in on March 3, 1961 (1961-03-03), she hauled 3,925 tonnes (3,925 t) a year."
    assert snap("1961-03-03", prose) == "March 3, 1961 (1961-03-03)"
    assert snap("3,925 t", prose) == "3,925 tonnes (3,925 t)"
    assert snap("1961-03-03", "任职于1961年3月3日 (1961-03-03)。") == "1961年3月3日 (1961-03-03)"
    assert snap("389", "It sells for $389 in most shops.") == "$389"


def test_a_value_met_whole_wins_over_the_same_words_inside_a_longer_one() -> None:
    unit = "name: Ilse Varga\nschool: Dunmore Academy of Art\nhome town: Dunmore"
    assert snap("Dunmore", unit) == "Dunmore"
    assert snap("Academy", unit) == "Dunmore Academy of Art"


def test_a_name_is_named_by_its_words_not_by_a_namesakes() -> None:
    from kinject.rag.reader import _names

    kettle = "The Vantor K2 kettle boils 1.7 litres."
    assert _names("Vantor K2 kettle", kettle, "How much does the Vantor K2 kettle hold?")
    assert not _names("Vantor K3 kettle", kettle, "How much does the Vantor K3 kettle hold?")
    # The model copied a word too many, or a possessive, or capitalised an article.
    assert _names("Vantor K2 kettle hold", kettle, "How much does the Vantor K2 kettle hold?")
    assert _names("The Vantor K2's lid", kettle, "What colour is the Vantor K2's lid?")
    assert not _names("Silver Gannet", "name: the Northern Gannet", "Who sails the Silver Gannet?")
    assert _names("渡鸦河有多长", "渡鸦河全长四百一十公里。", "渡鸦河有多长？")
    assert not _names("白鹭河", "渡鸦河全长四百一十公里。", "白鹭河有多长？")



ROWS = ("Table 2.12. The log files for package activities\n"
        "file: /var/log/dpkg.log. content: Log of dpkg level activity for all package "
        "activities.\n"
        "file: /var/log/apt/term.log. content: Log of generic APT activity.")


def test_a_reading_of_a_whole_table_row_becomes_the_cell_asked_for() -> None:
    row = "/var/log/dpkg.log. content: Log of dpkg level activity for all package activities."
    assert cell(row, ROWS, "Which log file records dpkg level package activity?") == (
        "/var/log/dpkg.log")
    # the header the question shares most with, in Chinese too ("命令" of "命令片段")
    zh = '操作: 查看系统日志. 命令片段: "journalctl -b --system".'
    assert cell('查看系统日志. 命令片段: "journalctl -b --system".', zh,
                "想看系统日志，用什么命令？") == "journalctl -b --system"


def test_a_rows_cell_the_question_quotes_is_not_the_answer() -> None:
    row = "name: gre. number: 47. aliases: GRE."
    assert cell("GRE", row, "Which protocol number is GRE registered under?") == "47"


def test_a_reading_that_is_not_a_row_stands() -> None:
    assert cell("/var/log/dpkg.log", ROWS, "Which log file records dpkg activity?") is None
    assert cell("46", "The hut sleeps 46. Note: closed in May.", "How many beds?") is None
    assert reading_units(ROWS) == [ROWS]


def test_a_quoted_cell_is_answered_without_its_quotes() -> None:
    unit = reading_units("Operation: Get the default target\n"
                         'Command snippets: "systemctl get-default"')[0]
    assert snap("systemctl get-default", unit) == "systemctl get-default"


def test_a_reading_of_one_cell_of_a_row_written_on_one_line_stays_that_cell() -> None:
    # The reader read "journalctl -b -u $unit -f" of an HTML table's row, written by ingest as
    # one line of "Header: value." fields; it became the whole line, then the other cell
    row = ("Table 4.2. Handy firewall commands\n"
           'Task: Show the rules with packet counters. Command: "nft list ruleset -a".')
    assert snap("nft list ruleset -a", row) == "nft list ruleset -a"
    assert snap("packet counters", row) == "Show the rules with packet counters"
    assert snap("Command", row) == "nft list ruleset -a"  # a header named: its value
    # a reading of the whole row still goes whole to the cell picker
    whole = 'Show the rules with packet counters. Command: "nft list ruleset -a"'
    assert snap(whole, row).startswith("Show the rules")
    assert cell(snap(whole, row), row, "Which command shows the rules?") == "nft list ruleset -a"


def test_a_time_in_a_prose_line_is_not_taken_for_a_fields_name() -> None:
    # "which opens at 09:30 and ..." was read as the field "which opens at 09" with the value
    # "30 and closes at 17:00 on weekdays.", and a reading of "30" became that whole value
    prose = "Marrow Quay ticket office\nwhich opens at 09:30 and closes at 17:00 on weekdays."
    assert snap("30", prose) == "30"
    assert snap("09:30", prose) == "09:30"
    record = "office: Marrow Quay\nopens: 09:30\nclosing: 17:00"
    assert snap("30", record) == "09:30"  # a real field's value is still read whole


def test_a_value_inside_a_longer_number_of_the_reading_is_not_a_cell_it_holds() -> None:
    # The reader read "2350" (the price) from a CSV row; the warranty's "2" sits inside
    # "2350", so the reading was taken for the whole row and the cell of the header sharing
    # "an" with "scanner" (warranty_years) came out: "2". For the dock, the SKU.
    row = "sku: TR-1002. name: Gudgeon G1 scanner. price_eur: 2350. warranty_years: 2."
    assert cell("2350", row, "How much does the Gudgeon G1 scanner cost?") is None
    dock = "sku: TR-1003. name: Docking station D9. price_eur: 1275. warranty_years: 1."
    assert cell("1275", dock, "How much does the Docking station D9 cost?") is None
    # A reading of the row still becomes the cell asked for.
    assert cell("TR-1002, Gudgeon G1 scanner, 2350, 2", row,
                "What is the price_eur of the Gudgeon G1 scanner?") == "2350"
