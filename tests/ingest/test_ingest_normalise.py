from __future__ import annotations

import pytest

from kinject.ingest.normalise import detect_lang, normalise_text, remove_cjk_spaces


def test_nfkc_and_whitespace_keep_paragraphs() -> None:
    raw = "Ｆｕｌｌ\u00a0width\t\tand  ﬁ ligature\u200b\r\n\r\n\r\n\r\nNext   paragraph  \n"
    assert normalise_text(raw) == "Full width and fi ligature\n\nNext paragraph"


def test_chinese_punctuation_is_kept_full_width() -> None:
    assert (
        normalise_text("你好，世界！真的吗？是的；好：（一）")
        == "你好，世界！真的吗？是的；好：（一）"
    )


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("灯屿群岛位于大陆以西约六十公里的海上，由六座主要岛屿组成。", "zh"),
        ("这个服务使用 Python 3.11 和 Kafka 构建，部署在本地机器上。", "zh"),
        ("The keeper of the Gullspire lighthouse is Senna Calloway.", "en"),
        ("The tea called 雾眉 is grown on the isles.", "en"),
        ("灯塔 lighthouse 守护人 keeper 名字 name", "mixed"),
        ("", "en"),
        ("12345 !!!", "en"),
    ],
)
def test_detect_lang(text: str, lang: str) -> None:
    assert detect_lang(text) == lang


def test_remove_cjk_spaces_keeps_spaces_between_words() -> None:
    assert remove_cjk_spaces("灯 塔 在 岛 上 ， near the sea") == "灯塔在岛上， near the sea"
