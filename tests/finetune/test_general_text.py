"""The general-text corpus: shipped, two languages, a training part and a held-out part."""

import gzip
import json
from pathlib import Path

import pytest

from kinject.errors import ConfigError
from kinject.finetune.general_text import (
    SHIPPED,
    gate_sample,
    general_eval,
    general_train,
    load,
)


def _is_zh(text: str) -> bool:
    return sum("\u4e00" <= c <= "\u9fff" for c in text) > 0.3 * len(text)


def test_the_shipped_corpus_is_real_text_in_english_and_chinese_split_by_document() -> None:
    rows = load()
    train, held = general_train(), general_eval()
    # a few hundred paragraphs to measure on, more to train on, and never the same one
    assert len(held) >= 300 and len(train) >= 600
    assert not set(train) & set(held)
    # by document: no page or chapter lends paragraphs to both parts
    docs = {split: {r.doc for r in rows if r.split == split} for split in ("train", "held_out")}
    assert docs["train"] and not docs["train"] & docs["held_out"]
    for part in (train, held):
        zh = [t for t in part if _is_zh(t)]
        assert len(zh) >= 100 and len(part) - len(zh) >= 200
    assert set(general_train("zh")) | set(general_train("en")) == set(train)
    assert all(_is_zh(t) for t in general_eval("zh"))
    # every paragraph says where it comes from
    assert {r.source for r in rows} == {"python3.11-doc (PSF-2.0)", "debmake-doc zh-cn (Expat)"}
    with pytest.raises(ValueError, match="lang"):
        general_train("fr")


def test_the_corpus_and_its_licences_ship_with_the_package() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["kinject"]
    assert "finetune/data/*" in data
    notices = (SHIPPED.parent / "GENERAL_TEXT_LICENSES.txt").read_text(encoding="utf-8")
    assert "PSF LICENSE AGREEMENT" in notices and "Permission is hereby granted" in notices


def test_the_gate_sample_is_held_out_reproducible_and_in_both_languages() -> None:
    sample = gate_sample(200)
    assert len(sample) == 200 and len(set(sample)) == 200
    assert set(sample) <= set(general_eval()) and not set(sample) & set(general_train())
    assert sum(map(_is_zh, sample)) == 100
    assert gate_sample(200) == sample  # every cycle is measured on the same paragraphs
    assert gate_sample(200, seed=1) != sample
    # more than one language holds: the other fills the rest
    big = gate_sample(300)
    assert len(big) == 300 and sum(map(_is_zh, big)) == len(general_eval("zh"))
    assert len(gate_sample(10_000)) == len(general_eval())


def test_a_users_own_corpus_jsonl_or_plain_text(tmp_path: Path) -> None:
    rows = [{"text": f"Paragraph number {i} of a user's own manual, long enough to count.",
             "split": "held_out" if i < 3 else "train"} for i in range(10)]
    rows.append({"text": "没有标注划分的段落按文本的哈希分配到训练或留出部分，四分之一留出。"})
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert len(general_eval(path=path)) + len(general_train(path=path)) == 11
    assert {t for t in general_eval(path=path) if "number" in t} == {
        rows[i]["text"] for i in range(3)}
    assert general_train("zh", path=path) or general_eval("zh", path=path)
    assert set(gate_sample(50, path=path)) <= set(general_eval(path=path))

    # plain text (Debian Reference's .txt, say): paragraphs between blank lines; headings
    # and short lines are not prose
    text = tmp_path / "manual.txt"
    paras = [f"This is paragraph {i} of a plain text manual; it wraps\nover two lines and "
             f"says something about system administration." for i in range(40)]
    text.write_text("Chapter 1\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")
    got = general_train(path=text) + general_eval(path=text)
    assert sorted(got) == sorted(" ".join(p.split()) for p in paras)
    assert general_eval(path=text) and general_train(path=text)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.jsonl")
