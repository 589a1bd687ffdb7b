"""Exact and near-duplicate detection: what a re-published or lightly edited text meets."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinject.index.dedupe import ExactDeduper, NearDuplicateIndex, shingles

# About 150 words: near-duplicate detection at Jaccard 0.9 over word 5-shingles needs a text
# of this length to absorb a one-word edit (each changed word breaks five shingles).
LIGHTHOUSE = (
    "The Lantern Isles are six islands about forty miles west of the mainland. The oldest "
    "lighthouse on the isles is the Fennick light on Wisk Island, first lit in 1859 and kept "
    "by the Calloway family for three generations. Senna Calloway, the last keeper, wrote "
    "the logbooks that the Guild of Lamplighters still keeps in the Wick House on Tessel "
    "Point. The guild was founded in 1847 by the fishermen of Saltridge, who paid for the "
    "first lamps with a tithe on every barrel of herring landed at the harbour. Every winter "
    "the islanders keep the Night of Small Flames, when every window on the isles holds a "
    "candle from dusk until the ferry from Brinmore sounds its horn at dawn. Visitors reach "
    "the isles by the morning ferry from Brinmore, which takes about two hours in calm "
    "weather and stops at Saltridge harbour, Wisk Island and the small quay below the old "
    "salt works, where the tea merchants once loaded their boats for the mainland markets."
)
OTHER = (
    "The Marrow Institute was founded in 1987 on the eastern shore of Lake Verrin. Its "
    "researchers study the migration of wading birds and publish a yearly atlas of the "
    "routes they follow between the northern marshes and the southern estuaries, together "
    "with counts made by volunteers at forty stations around the lake and along the coast."
)
ZH = (
    "灯屿群岛位于大陆以西约六十公里的海上，由六座主要岛屿组成。群岛上最古老的灯塔是维斯克岛的"
    "芬尼克灯塔，于1859年首次点亮。岛上居民以种植一种叫做雾眉的茶叶为生，每年九月，萨尔特里奇港"
    "会举办为期三天的海盐茶节。节日期间，渔民们把新茶装在陶罐里，沿着码头摆成一条长龙。"
)


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[NearDuplicateIndex]:
    with NearDuplicateIndex(tmp_path / "near.sqlite") as idx:
        yield idx


def test_exact_deduper_reports_the_first_key() -> None:
    exact = ExactDeduper()
    assert exact.add("a", LIGHTHOUSE) is None
    assert exact.add("b", LIGHTHOUSE) == "a"
    assert exact.add("c", OTHER) is None
    exact.remove("a")
    assert exact.add("d", LIGHTHOUSE) is None
    assert len(exact) == 3


def test_near_copy_with_a_changed_word_or_spacing_is_found(index: NearDuplicateIndex) -> None:
    index.add("lighthouse", LIGHTHOUSE, source_id="isles.txt")
    index.add("marrow", OTHER, source_id="marrow.txt")
    assert index.find(LIGHTHOUSE) == ["lighthouse"]
    one_word = LIGHTHOUSE.replace("three generations", "four generations")
    assert index.find(one_word) == ["lighthouse"]
    spacing = "  " + LIGHTHOUSE.replace(". ", ".\n\n").replace(" ", "   ").upper()
    assert index.find(spacing) == ["lighthouse"]
    assert index.find(OTHER) == ["marrow"]


def test_different_texts_are_not_duplicates(index: NearDuplicateIndex) -> None:
    index.add("lighthouse", LIGHTHOUSE)
    assert index.find(OTHER) == []
    # Same topic, half the text: related, but not a duplicate.
    assert index.find(LIGHTHOUSE[: len(LIGHTHOUSE) // 2]) == []
    assert index.find("") == []
    assert not index.add("empty", "  。。。 ")
    assert len(index) == 1


def test_chinese_near_duplicates_are_found(index: NearDuplicateIndex) -> None:
    index.add("zh", ZH)
    edited = ZH.replace("三天", "四天").replace("，", ", ")
    assert index.find(edited) == ["zh"]
    assert index.find("马罗研究所成立于1987年，位于韦林湖东岸，研究候鸟的迁徙路线。") == []


def test_remove_and_remove_source_forget_keys(index: NearDuplicateIndex) -> None:
    index.add("isles#0", LIGHTHOUSE, source_id="isles.txt")
    index.add("isles#1", ZH, source_id="isles.txt")
    index.add("marrow#0", OTHER, source_id="marrow.txt")
    assert index.remove("marrow#0")
    assert not index.remove("marrow#0")
    assert index.find(OTHER) == []
    assert sorted(index.remove_source("isles.txt")) == ["isles#0", "isles#1"]
    assert index.find(LIGHTHOUSE) == [] and index.find(ZH) == []
    assert len(index) == 0


def test_re_adding_a_key_replaces_its_text(index: NearDuplicateIndex) -> None:
    index.add("doc", LIGHTHOUSE)
    index.add("doc", OTHER)
    assert index.find(LIGHTHOUSE) == []
    assert index.find(OTHER) == ["doc"]
    assert len(index) == 1
    # A key whose new text has no words holds nothing any more.
    assert not index.add("doc", "---")
    assert index.find(OTHER) == [] and len(index) == 0


def test_index_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "near.sqlite"
    with NearDuplicateIndex(path) as idx:
        assert idx.add_many([("a", LIGHTHOUSE, "s1"), ("b", ZH, "s2"), ("c", OTHER, "s3")]) == 3
        idx.remove("c")
    with NearDuplicateIndex(path) as idx:
        assert len(idx) == 2 and "a" in idx and "c" not in idx
        assert idx.find(LIGHTHOUSE.replace("calm", "fair")) == ["a"]
        assert idx.find(ZH) == ["b"]
        assert idx.remove_source("s2") == ["b"]
    with NearDuplicateIndex(path) as idx:
        assert len(idx) == 1
    with pytest.raises(ValueError, match="num_perm=128"):
        NearDuplicateIndex(path, num_perm=64)


def test_signatures_are_equal_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "near.sqlite"
    code = (
        "import sys; from pathlib import Path; from kinject.index.dedupe import "
        "NearDuplicateIndex as N; i = N(Path(sys.argv[1])); i.add('x', sys.argv[2]); i.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(path), OTHER], check=True, timeout=60)
    with NearDuplicateIndex(path) as idx:
        assert idx.find(OTHER) == ["x"]


def test_concurrent_adds_and_finds(index: NearDuplicateIndex) -> None:
    texts = [
        f"{OTHER} Station {i} counted {i * 37} birds in the spring of 19{i:02d}." for i in range(40)
    ]

    def work(offset: int) -> None:
        for i in range(offset, 40, 4):
            index.add(f"k{i}", texts[i])
            index.find(texts[i])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(index) == 40
    assert set(index.find(texts[7])) >= {"k7"}


def test_shingles_by_language() -> None:
    assert shingles("One two three four five six", "en") == {
        "one two three four five",
        "two three four five six",
    }
    assert shingles("灯塔，守护人", "zh") == {"灯塔守", "塔守护", "守护人"}
    assert shingles("Short text", "en") == {"short text"}
    assert shingles("!!!", "en") == set()


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(tmp_path / "x.sqlite", threshold=1.5)
    with pytest.raises(ValueError, match="num_perm"):
        NearDuplicateIndex(tmp_path / "x.sqlite", num_perm=4)
