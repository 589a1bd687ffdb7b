"""Normalisation (full-width forms) and enrichment (ISO dates, metric units beside the original)."""

from __future__ import annotations

import pytest

from kinject.ingest.enrich import annotate_dates, annotate_units, enrich_text
from kinject.ingest.normalise import normalise_text

# --- full-width to half-width where the text is not Chinese --------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Latin text typed with a Chinese input method gets ASCII punctuation and spacing.
        ("Hello，world！How are you？", "Hello, world! How are you?"),
        ("Ｔｅｓｔ：ＡＢＣ（ｎｏｔｅ）。Ｎｅｘｔ、ｏｎｅ", "Test: ABC (note). Next, one"),
        # Inside Chinese text letters and digits become half-width, punctuation stays.
        ("我喜欢Ｐｙｔｈｏｎ，它很好用。", "我喜欢Python，它很好用。"),
        ("２０２３年５月１日，温度３０℃。", "2023年5月1日，温度30°C。"),
        ("使用（Python 3.11）编写", "使用（Python 3.11）编写"),
        # The end of a Chinese sentence that closes on a Latin word is still Chinese.
        ("价格：３００元，约４５ USD。", "价格：300元，约45 USD。"),
        # A number's thousands separator typed full-width.
        ("共3，000人", "共3,000人"),
    ],
)
def test_full_width_becomes_half_width_outside_chinese(raw: str, expected: str) -> None:
    assert normalise_text(raw) == expected


def test_normalise_is_idempotent_on_mixed_text() -> None:
    raw = "他说：“Ｈｅｌｌｏ，ｗｏｒｌｄ！”\n\nThe ＡＰＩ，v２。"
    once = normalise_text(raw)
    assert once == "他说：“Hello, world！”\n\nThe API, v2."
    assert normalise_text(once) == once


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It opened on May 1, 2023.", "It opened on May 1, 2023 (2023-05-01)."),
        ("It opened on 1 May 2023.", "It opened on 1 May 2023 (2023-05-01)."),
        ("Signed Sept. 3rd, 2021 in Oslo.", "Signed Sept. 3rd, 2021 (2021-09-03) in Oslo."),
        ("Founded in March 2019.", "Founded in March 2019 (2019-03)."),
        ("Released 2023/5/1.", "Released 2023/5/1 (2023-05-01)."),
        ("Released 2023-5-1.", "Released 2023-5-1 (2023-05-01)."),
        ("灯塔于2023年5月1日重新开放。", "灯塔于2023年5月1日 (2023-05-01)重新开放。"),
        ("项目在2023年5月启动。", "项目在2023年5月 (2023-05)启动。"),
        ("1887年10月12号建成", "1887年10月12号 (1887-10-12)建成"),
    ],
)
def test_dates_get_iso_form_beside_them(raw: str, expected: str) -> None:
    assert annotate_dates(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Already ISO: 2023-05-01.",
        "Feb 30, 2023 never happened.",
        "2023年2月30日不存在。",
        "2023/13/01 is no month.",
        "US style 5/1/2023 is ambiguous and left alone.",
        "Version 2023.5.1 and build 12023/5/1.",
        "May we meet at 10?",
    ],
)
def test_non_dates_and_impossible_dates_are_left_alone(text: str) -> None:
    assert annotate_dates(text) == text


# --- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The trail is 12 mi long.", "The trail is 12 mi (19.3 km) long."),
        ("It weighs 100 lb.", "It weighs 100 lb (45.4 kg)."),
        ("He is 6 feet tall.", "He is 6 feet (1.83 m) tall."),
        ("A fever of 98.6 °F is normal.", "A fever of 98.6 °F (37 °C) is normal."),
        ("Cold: -40°F.", "Cold: -40°F (-40 °C)."),
        ("Run 5-10 mi today.", "Run 5-10 mi (8.05-16.1 km) today."),
        ("A 2 gallon tank.", "A 2 gallon (7.57 L) tank."),
        ("Walk 5 kilometres.", "Walk 5 kilometres (5 km)."),
        ("重5公斤", "重5公斤 (5 kg)"),
        ("约60公里", "约60公里 (60 km)"),
        ("距离1,000千米", "距离1,000千米 (1,000 km)"),
        ("高30米，长5厘米", "高30米 (30 m)，长5厘米 (5 cm)"),
        ("买了3斤苹果", "买了3斤 (1.5 kg)苹果"),
        ("跑了12英里", "跑了12英里 (19.3 km)"),
    ],
)
def test_units_get_metric_form_beside_them(raw: str, expected: str) -> None:
    assert annotate_units(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Already metric: 5 km, 5km, 3 kg and 20 °C.",
        "Model A4 m, 10 min, 5 times, $5 m a year.",
        "The author converted it: 5 mi (8 km).",
        "5 in the box",  # "in" is a word before it is an inch
    ],
)
def test_metric_amounts_and_look_alikes_are_left_alone(text: str) -> None:
    assert annotate_units(text) == text


def test_enrich_is_idempotent() -> None:
    raw = (
        "On May 1, 2023 the keeper walked 12 mi and carried 20 lb; "
        "2023年5月1日，她走了12英里，背了5公斤。"
    )
    once = enrich_text(raw)
    assert once == (
        "On May 1, 2023 (2023-05-01) the keeper walked 12 mi (19.3 km) and carried "
        "20 lb (9.07 kg); 2023年5月1日 (2023-05-01)，她走了12英里 (19.3 km)，背了5公斤 (5 kg)。"
    )
    assert enrich_text(once) == once


def test_enrich_after_normalise_on_full_width_input() -> None:
    raw = "２０２３年５月１日，灯塔距港口１２ｍｉ。"
    assert enrich_text(normalise_text(raw)) == (
        "2023年5月1日 (2023-05-01)，灯塔距港口12mi (19.3 km)。"
    )
