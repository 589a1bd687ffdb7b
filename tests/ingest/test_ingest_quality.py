"""Low-information filter and PII redaction, on text of the kind real pages carry."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kinject.ingest.quality import (
    DEFAULT_THRESHOLD,
    informativeness,
    is_low_information,
    redact_pii,
)

BOILERPLATE = [
    ("Click here. Read more. Home | About | Contact", "en"),
    ("Copyright © 2023 All rights reserved. Privacy Policy | Terms of Use", "en"),
    ("Share this: Facebook Twitter Email Print", "en"),
    ("Accept cookies? Yes / No", "en"),
    ("Page 3 of 10", "en"),
    ("----- ===== -----", "en"),
    ("", "en"),
    ("。。。。", "zh"),
    ("点击这里。阅读更多。首页 | 关于我们 | 联系我们", "zh"),
    ("版权所有 © 2023 保留所有权利", "zh"),
    ("上一页 下一页 返回顶部", "zh"),
    ("扫一扫关注我们的微信公众号", "zh"),
]
FACTS = [
    ("The Gullspire lighthouse was built in 1887 by Senna Calloway.", "en"),
    ("Paris is the capital of France.", "en"),
    ("Water boils at 100 degrees Celsius at sea level.", "en"),
    ("The keeper lives on the island.", "en"),
    ("灯屿群岛位于大陆以西约六十公里的海上，由六座主要岛屿组成。", "zh"),
    ("马罗研究所成立于1987年。", "zh"),
    ("他是一个好人。", "zh"),
    ("这个服务使用 Python 3.11 和 Kafka 构建，部署在本地机器上。", "zh"),
    ("灯塔 lighthouse 守护人 keeper 名字 name", "mixed"),
]


@pytest.mark.parametrize(("text", "lang"), BOILERPLATE)
def test_boilerplate_is_low_information(text: str, lang: str) -> None:
    assert informativeness(text, lang) < DEFAULT_THRESHOLD
    assert is_low_information(text, lang)


@pytest.mark.parametrize(("text", "lang"), FACTS)
def test_factual_sentences_pass_with_a_wide_margin(text: str, lang: str) -> None:
    # At least twice the default threshold: the filter never sits near real knowledge.
    assert informativeness(text, lang) >= 2 * DEFAULT_THRESHOLD
    assert not is_low_information(text, lang)


def test_language_is_detected_when_not_given() -> None:
    assert informativeness("马罗研究所成立于1987年。") == informativeness(
        "马罗研究所成立于1987年。", "zh"
    )
    assert is_low_information("Click here. Read more.")


def test_a_page_keeps_its_facts_and_loses_its_furniture() -> None:
    page = [
        "Home | News | About | Contact",
        "The Marrow Institute was founded in 1987 on the eastern shore of Lake Verrin.",
        "Read more",
        "马罗研究所位于韦林湖东岸，以研究候鸟迁徙闻名。",
        "上一篇 下一篇",
        "Copyright © 2024 Marrow Institute. All rights reserved.",
    ]
    kept = [line for line in page if not is_low_information(line)]
    assert kept == [page[1], page[3]]


def test_threshold_is_configurable_and_checked() -> None:
    text = "It was good."
    assert not is_low_information(text)
    assert is_low_information(text, threshold=0.9)
    with pytest.raises(ValueError, match="threshold"):
        is_low_information(text, threshold=1.5)


def test_jieba_loads_offline_and_quietly() -> None:
    # A fresh interpreter: the dictionary comes from the package and nothing is logged.
    code = (
        "from kinject.ingest.quality import informativeness;"
        "print(round(informativeness('灯屿群岛位于大陆以西约六十公里的海上。', 'zh'), 3))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert float(out.stdout) > 0.2
    assert out.stderr == ""


# --- PII -------------------------------------------------------------------------------------


def _cn_id(first17: str, *, valid: bool = True) -> str:
    """An 18-character resident ID with its GB 11643 check character (or a wrong one)."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[(total + (0 if valid else 1)) % 11]


@pytest.mark.parametrize(
    ("raw", "expected", "count"),
    [
        (
            "Write to senna.calloway@gullspire.example.org or call +44 20 7946 0958.",
            "Write to [EMAIL] or call [PHONE].",
            2,
        ),
        (
            "Office (415) 555-0132, mobile 415-555-0133, fax +1 (415) 555-0134.",
            "Office [PHONE], mobile [PHONE], fax [PHONE].",
            3,
        ),
        (
            "手机：13812345678，或 +86 138 1234 5678，座机 010-12345678。",
            "手机：[PHONE]，或 [PHONE]，座机 [PHONE]。",
            3,
        ),
        (
            f"身份证号 {_cn_id('11010519491231002')}，已登记。",
            "身份证号 [ID]，已登记。",
            1,
        ),
        (
            "Visa 4111 1111 1111 1111, Amex 3782 822463 10005, MC 5555555555554444.",
            "Visa [CARD], Amex [CARD], MC [CARD].",
            3,
        ),
    ],
)
def test_pii_is_replaced_by_its_kind(raw: str, expected: str, count: int) -> None:
    assert redact_pii(raw) == (expected, count)


@pytest.mark.parametrize(
    "text",
    [
        "Built in 1887; population 1,234,567; ISBN 978-3-16-148410-0; Python 3.11.4.",
        "Order 20230501123045 shipped on 2023-05-01 (2023-05-01).",
        "Card-like but failing Luhn: 4111 1111 1111 1112.",
        # An 18-digit number with a wrong check digit is not an ID.
        f"编号 {_cn_id('11010519491231002', valid=False)}",
        "Write to @keeper on the forum, or to keeper@localhost.",
        "The island is 60 km away and the tower 35 m tall.",
    ],
)
def test_numbers_that_are_not_pii_are_left_alone(text: str) -> None:
    assert redact_pii(text) == (text, 0)


# Tables as a real manual draws them in plain text (Debian Reference, man pages): the
# probe of issue 20 saw 58 of 2,000 paragraphs of a manual dead-lettered, all of them tables.
MANUAL_TABLES = {
    "file-descriptors": """Table 1.22. Predefined file descriptors

┌──────┬─────────────────┬───────────────┐
│device│   description   │file descriptor│
├──────┼─────────────────┼───────────────┤
│stdin │standard input   │0              │
├──────┼─────────────────┼───────────────┤
│stdout│standard output  │1              │
├──────┼─────────────────┼───────────────┤
│stderr│standard error   │2              │
└──────┴─────────────────┴───────────────┘""",
    "netmasks": """+-------+------------------------------+---------------+-------+-----------+
| class | network addresses            | net mask      | /bits | # subnets |
+-------+------------------------------+---------------+-------+-----------+
| A     | 10.x.x.x                     | 255.0.0.0     | /8    | 1         |
| B     | 172.16.x.x -- 172.31.x.x     | 255.255.0.0   | /16   | 16        |
| C     | 192.168.0.x -- 192.168.255.x | 255.255.255.0 | /24   | 256       |
+-------+------------------------------+---------------+-------+-----------+""",
    "date-formats": """ ==================== =========================== =====================
  format               example of output           command
 ==================== =========================== =====================
  iso-8601             2013-11-01                  date --iso-8601
  iso-8601=seconds     2013-11-01T12:34:56+09:00   date --iso=s
  rfc-3339             2013-11-01 12:34:56+09:00   date --rfc-3339=s
  %Y%m%d               20131101                    date +%Y%m%d
 ==================== =========================== =====================""",
    "permissions": """| octal | symbolic | meaning       |
|-------|----------|---------------|
| 4     | r--      | read          |
| 2     | -w-      | write         |
| 1     | --x      | execute       |
| 0     | ---      | no permission |""",
}


@pytest.mark.parametrize("name", sorted(MANUAL_TABLES))
def test_a_manuals_tables_are_kept_whole(name: str) -> None:
    """Every cell of a table drawn in text survives the filter (only a chunk of nothing but
    rules may go), so the record is not dead-lettered as boilerplate."""
    import re

    from kinject.ingest.pipeline import IngestConfig, ingest_record
    from kinject.types import Record

    text = MANUAL_TABLES[name]
    result = ingest_record(Record(f"manual/{name}", kind="text", content=text.encode()),
                           IngestConfig(ocr_engine="none", chunk_size=96, chunk_overlap=0))
    kept = " ".join(c.text for c in result.chunks)
    cells = set(re.findall(r"\w[\w.:%+=-]*", text))
    assert cells and all(cell in kept for cell in cells), sorted(c for c in cells
                                                                 if c not in kept)
    assert len(result.chunks) >= 2  # chunks holding only rows and rules are covered
    assert not is_low_information(text, "en")


@pytest.mark.parametrize("text", ["+-------+-------+\n|       |       |\n+-------+-------+",
                                  "──────────────", "| | | | | |", "=====  -----  ....."])
def test_empty_table_rules_are_still_noise(text: str) -> None:
    assert is_low_information(text, "en")
