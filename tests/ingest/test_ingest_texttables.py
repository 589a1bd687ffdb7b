"""Grid tables drawn in plain text are read as rows: excerpts of Debian Reference 2.100's text
version (debian-reference-en / -zh-cn, /usr/share/debian-reference/debian-reference.*.txt.gz,
chapter 4; Copyright (C) 2013-2021 Osamu Aoki, GPL-2+), as the package ships them."""

from __future__ import annotations

from kinject.ingest.pipeline import ingest_record
from kinject.ingest.texttables import rewrite_grid_tables
from kinject.types import Record

ENGLISH = """\
    Table 4.1. 3 important configuration files for pam_unix(8)

    +---------------------------------------------------------------+
    |  file   |permission|user|group |         description          |
    |---------+----------+----+------+------------------------------|
    |/etc/    |-rw-r--r--|root|root  |(sanitized) user account      |
    |passwd   |          |    |      |information                   |
    |---------+----------+----+------+------------------------------|
    |/etc/    |-rw-r-----|root|shadow|secure user account           |
    |shadow   |          |    |      |information                   |
    |---------+----------+----+------+------------------------------|
    |/etc/    |-rw-r--r--|root|root  |group information             |
    |group    |          |    |      |                              |
    +---------------------------------------------------------------+

"""
CHINESE = """\

    表 4.1. pam_unix(8) 使用的 3 个重要配置文件

    +---------------------------------------------------------+
    |   文件    |   权限   |用户|  组  |         说明         |
    |-----------+----------+----+------+----------------------|
    |/etc/passwd|-rw-r--r--|root|root  |（明文的）用户账号信息|
    |-----------+----------+----+------+----------------------|
    |/etc/shadow|-rw-r-----|root|shadow|安全加密的用户账号信息|
    |-----------+----------+----+------+----------------------|
    |/etc/group |-rw-r--r--|root|root  |组信息                |
    +---------------------------------------------------------+
"""


def test_a_drawn_table_becomes_one_line_per_row_with_wrapped_cells_joined() -> None:
    rows = [line.strip() for line in rewrite_grid_tables(ENGLISH).split("\n") if "file:" in line]
    assert rows == [
        "file: /etc/passwd. permission: -rw-r--r--. user: root. group: root. "
        "description: (sanitized) user account information.",
        "file: /etc/shadow. permission: -rw-r-----. user: root. group: shadow. "
        "description: secure user account information.",
        "file: /etc/group. permission: -rw-r--r--. user: root. group: root. "
        "description: group information.",
    ]
    assert "+-----" not in rewrite_grid_tables(ENGLISH)


def test_a_chinese_table_is_cut_at_its_display_columns() -> None:
    text = rewrite_grid_tables(CHINESE)
    assert ("文件: /etc/shadow. 权限: -rw-r-----. 用户: root. 组: shadow. "
            "说明: 安全加密的用户账号信息.") in text
    assert "|" not in text


def test_a_text_record_with_a_table_is_chunked_as_rows() -> None:
    out = ingest_record(Record("docs/ch04.txt", kind="text", content=ENGLISH.encode()))
    (row,) = [c.text for c in out.chunks if "secure user account" in c.text]
    assert "/etc/shadow" in row and "|" not in row


def test_lines_that_only_look_like_a_table_are_left_alone() -> None:
    text = "+---+\n| a pipe | in prose |\nno border below\n"
    assert rewrite_grid_tables(text) == text


def test_every_chunk_of_a_long_drawn_table_starts_with_its_title() -> None:
    from kinject.ingest.pipeline import IngestConfig

    lines = ENGLISH.split("\n")
    rows = [line.replace("passwd   ", f"conf{i:02d}   ") for i in range(12) for line in lines[5:8]]
    grid = lines[:5] + rows + lines[11:14]  # twelve more rows, then /etc/group
    text = "Some words before the table.\n\n" + "\n".join(grid) + "\nAnd after it.\n"
    out = ingest_record(Record("docs/ch04.txt", kind="text", content=text.encode()),
                        IngestConfig(chunk_size=400, chunk_overlap=0, enrich=False))
    chunks = [c.text for c in out.chunks if "file: /etc/" in c.text]
    assert len(chunks) > 2
    assert all(c.startswith("Table 4.1. 3 important configuration files for pam_unix(8)\n"
                            "file: /etc/") for c in chunks)
    assert "file: /etc/group." in chunks[-1]
