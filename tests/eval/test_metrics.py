"""The answer metrics on English and Chinese, and their edge cases."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kinject.eval import metrics as m


def test_normalise_folds_case_punctuation_whitespace_and_full_width_forms() -> None:
    assert m.normalise("  The  Guild,\tin 1847! ") == "the guild in 1847"
    assert m.normalise("ＡＢＣ １８４７。") == "abc 1847"  # full-width letters, digits, 。
    assert m.normalise("北京，中国") == "北京 中国"


def test_tokens_split_chinese_by_characters_and_other_text_by_words() -> None:
    assert m.tokens("Ada Quill 生于北京") == ["ada", "quill", "生", "于", "北", "京"]
    assert m.tokens("") == []


def test_exact_match_is_normalised() -> None:
    assert m.exact_match("Ada Quill.", "ada quill") == 1.0
    assert m.exact_match("ＡＤＡ　ＱＵＩＬＬ", "Ada Quill") == 1.0
    assert m.exact_match("Ada", "Ada Quill") == 0.0
    assert m.exact_match("北京。", "北京") == 1.0
    assert m.exact_match("Western Counties League", "the Western Counties League") == 1.0
    assert m.contains("In the Western Counties League.", "the Western Counties League") == 1.0


def test_contains_needs_whole_tokens_in_order() -> None:
    assert m.contains("It was founded in 1847 by Ada Quill.", "Ada Quill") == 1.0
    assert m.contains("It was founded in 1847.", "18") == 0.0  # not half a number
    assert m.contains("Quill Ada", "Ada Quill") == 0.0
    assert m.contains("他出生在北京。", "北京") == 1.0
    assert m.contains("", "北京") == 0.0
    assert m.contains("", "") == 1.0 and m.contains("something", "") == 0.0


def test_token_f1_counts_duplicates_and_handles_empty_answers() -> None:
    assert m.token_f1("Ada Quill", "Ada Quill") == 1.0
    # answer tokens: ada ada ada (3), reference: ada quill (2); overlap 1
    # precision 1/3, recall 1/2 -> F1 0.4
    assert m.token_f1("Ada Ada Ada", "Ada Quill") == pytest.approx(0.4)
    assert m.token_f1("", "Ada Quill") == 0.0
    assert m.token_f1("", "") == 1.0
    # characters: 北京大学 vs 北京: overlap 2, precision 2/4, recall 1 -> 2/3
    assert m.token_f1("北京大学", "北京") == pytest.approx(2 / 3)


def test_rouge_l_scores_chinese_which_the_default_tokenizer_drops() -> None:
    from rouge_score import rouge_scorer

    # rouge-score's own tokenizer keeps only [a-z0-9]: Chinese would score 0 against itself.
    assert rouge_scorer.RougeScorer(["rougeL"]).score("北京", "北京")["rougeL"].fmeasure == 0
    assert m.rouge_l("北京", "北京") == 1.0
    # LCS of 他在北京工作 and 北京 is 2: precision 2/6, recall 1 -> F 0.5
    assert m.rouge_l("他在北京工作", "北京") == pytest.approx(0.5)
    # the longest common subsequence is "the guild" (or "ada quill"): 2 of 7 and 2 of 5
    assert m.rouge_l("the guild was founded by Ada Quill", "Ada Quill founded the guild") == (
        pytest.approx(1 / 3))
    assert m.rouge_l("", "Ada") == 0.0 and m.rouge_l("", "") == 1.0


def test_bleu_is_on_a_zero_to_one_scale_for_english_and_chinese() -> None:
    same = "the guild was founded in 1847 by ada quill"
    assert m.bleu(same, same) == pytest.approx(1.0)
    assert m.bleu("THE GUILD WAS FOUNDED IN 1847 BY ADA QUILL", same) == pytest.approx(1.0)
    partial = m.bleu("the guild was founded in 1900 by someone", same)
    assert 0.0 < partial < 0.6
    assert m.bleu("李明出生在北京", "李明出生在北京", "zh") == pytest.approx(1.0)
    assert m.bleu("李明出生在上海", "李明出生在北京", "zh") < 1.0
    assert m.bleu("", same) == 0.0


def test_entity_f1_on_chinese_names_places_and_organisations() -> None:
    ref = "李明在北京的清华大学工作"
    assert m.entities(ref, "zh") == frozenset({"李明", "北京", "清华大学"})
    assert m.entity_f1("李明在北京的清华大学工作", ref, "zh") == 1.0
    # one of three entities right, nothing wrong: precision 1, recall 1/3 -> 0.5
    assert m.entity_f1("在北京", ref, "zh") == pytest.approx(0.5)
    assert m.entity_f1("", ref, "zh") == 0.0
    assert m.entity_f1("随便什么", "很好", "zh") is None  # the reference names no entity


def test_entity_f1_on_english_uses_spacy() -> None:
    if not m.spacy_available():
        pytest.skip("the eval extra (spaCy's en_core_web_sm) is not installed")
    ref = "Ada Quill founded the guild in Paris."
    assert {"ada quill", "paris"} <= m.entities(ref, "en")  # type: ignore[operator]
    assert m.entity_f1("Ada Quill founded it in Paris.", ref, "en") == 1.0
    assert m.entity_f1("Bob Stone founded it in London.", ref, "en") == 0.0


def test_citation_scores() -> None:
    assert m.citation_scores(["kb/a", "kb/a", "kb/b"], ["kb/a"]) == (0.5, 1.0)
    assert m.citation_scores([], ["kb/a"]) == (None, 0.0)
    assert m.citation_scores(["kb/a"], ["kb/b"]) == (0.0, 0.0)
    assert m.citation_scores(["kb/a"], []) == (None, None)  # nothing known to be right
    assert m.citation_scores([], []) == (None, None)


def test_percentiles_and_means() -> None:
    assert m.percentile([], 50) is None
    assert m.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert m.percentile([float(i) for i in range(1, 101)], 95) == pytest.approx(95.05)
    assert m.mean([1.0, None, 0.0]) == 0.5 and m.mean([None]) is None


def test_language() -> None:
    assert m.language("who founded the guild") == "en"
    assert m.language("谁创立了公会") == "zh"


def test_chinese_entities_load_jieba_without_printing_its_debug_lines() -> None:
    # `kinject eval` on a set with a Chinese question printed jieba's "Building prefix
    # dict ..." lines twice (its own handler and kinject's) among the scores
    code = ("from kinject.logs import setup_logging; setup_logging('INFO');"
            "from kinject.eval.metrics import entities;"
            "print(sorted(entities('王芳住在杭州。', 'zh')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert "杭州" in done.stdout
    assert "prefix dict" not in done.stderr and "DEBUG" not in done.stderr
