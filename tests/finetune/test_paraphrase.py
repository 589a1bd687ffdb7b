"""LM paraphrases: the quality gate, the cache in the corpus store, deletes, and the real
SmolLM2 writing them (slow)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from kinject.finetune.corpus import CorpusStore
from kinject.finetune.paraphrase import (
    FORM,
    LmParaphraser,
    ParaphraseConfig,
    clean_output,
    drop_reason,
    ensure_paraphrases,
    key_terms,
    lm_augment,
    units,
)
from kinject.types import Chunk, content_hash

EN = "Ada Lind was born in Osk on March 2, 1990."
ZH = "林晓雯于1990年出生在大理。"
ZH_ORG = "蓝湖科技成立于2011年，总部位于杭州。"


def _chunk(text: str, source: str = "bio-1", lang: str = "en") -> Chunk:
    return Chunk(content_hash(source, text), f"doc-{source}", source, text, lang=lang)


# -- the gate --------------------------------------------------------------------------------
def test_key_terms_hold_names_numbers_and_dates() -> None:
    assert {"Ada", "Lind", "Osk", "March", "2", "1990"} <= key_terms(EN, "en")
    assert "Born" not in key_terms("Born in Osk, Ada Lind studied law.", "en")
    assert {"林晓雯", "1990", "大理"} <= key_terms(ZH, "zh")
    assert {"2011", "杭州"} <= key_terms(ZH_ORG, "zh")


@pytest.mark.parametrize("candidate", [
    "On March 2, 1990, Ada Lind was born in Osk.",
    "Ada Lind's birth took place in Osk on March 2, 1990.",
])
def test_gate_keeps_a_faithful_rewording(candidate: str) -> None:
    assert drop_reason(EN, candidate, "en") is None


@pytest.mark.parametrize(("candidate", "why"), [
    ("Ada Lind was born in Osk on March 2, 1990", "copy"),
    ("ada lind was born in osk on march 2 1990.", "copy"),
    ("Ada Lind was born in 1990.", "lost"),  # the place and the day went missing
    ("In 2009, Ada Lind was born on March 2, 2019.", "lost"),  # a number changed
    ("On March 2, 1990, Ada Lind was born in Osk, near Brenna, in 2001.", "added"),
    ("Here is the sentence: on March 2, 1990, Ada Lind was born in Osk.", "echo"),
    ("Sure! On March 2, 1990, Ada Lind was born in Osk.", "echo"),
    ("Ada.", "length"),
    ("On March 2, 1990, Ada Lind was born in Osk, a town that is known for its long "
     "winters, its old harbour, its markets and its many bridges over the river.", "length"),
    ("", "empty"),
    ("艾达·林德于1990年3月2日出生在奥斯克。", "language"),
])
def test_gate_drops_drift_copies_and_echoes(candidate: str, why: str) -> None:
    reason = drop_reason(EN, candidate, "en")
    assert reason is not None and why in reason, (candidate, reason)


def test_gate_drops_a_swapped_subject() -> None:
    src = "Tomas Berg founded Bluelake Systems in 2011 with 40 employees."
    assert drop_reason(src, "In 2011, 40 employees at Bluelake Systems founded Tomas Berg.",
                       "en") is not None
    assert drop_reason(src, "In 2011, Tomas Berg founded Bluelake Systems with 40 employees.",
                       "en") is None
    assert drop_reason(src, "Bluelake Systems was founded by Tomas Berg in 2011 with 40 "
                       "employees.", "en") is None


@pytest.mark.parametrize(("source", "candidate", "kept"), [
    (ZH, "1990年，林晓雯出生在大理。", True),
    (ZH, "林晓雯出生于1990年，出生地是大理。", True),
    (ZH, "林晓雯于1990年出生在大理", False),  # a copy
    (ZH, "林晓雯刚开始到大理，明明雯雨看到林晓雯。", False),  # the year is gone
    (ZH, "以下是改写：1990年，林晓雯出生在大理。", False),  # instruction echo
    (ZH, "Lin Xiaowen was born in Dali in 1990.", False),  # wrong language
    (ZH, "1990年，林晓雯被搬到了大理。", False),  # the relation changed (SmolLM2 wrote it)
    (ZH_ORG, "2011年，蓝湖科技成立，总部在杭州。", True),
    (ZH_ORG, "2011年，蓝湖科技成立，总部在上海。", False),  # the city changed
])
def test_gate_in_chinese(source: str, candidate: str, kept: bool) -> None:
    assert (drop_reason(source, candidate, "zh") is None) is kept


def test_clean_output_takes_the_sentence_without_label_or_quotes() -> None:
    assert clean_output('"On March 2, 1990, Ada Lind was born in Osk."\n\nMore text') == \
        "On March 2, 1990, Ada Lind was born in Osk."
    assert clean_output("Paraphrase: In 2004, Mia moved.") == "In 2004, Mia moved."


def test_units_resolve_pronouns_and_skip_rows() -> None:
    chunk = _chunk("Ada Lind was born in Osk in 1990. She studied law at Varn University.")
    assert units(chunk) == ["Ada Lind was born in Osk in 1990.",
                            "Ada Lind studied law at Varn University."]
    row = Chunk("r1", "d", "s", "name: Ada Lind\ncity: Osk", kind="csv",
                meta={"row": {"name": "Ada Lind", "city": "Osk"}})
    assert units(row) == []


# -- cache, lineage and deletes in the corpus store ---------------------------------------------
class FakeLm:
    """Stands in for the model: a faithful reordering, a drifted one and a copy per sentence."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
        out = []
        for sentence, _ in items:
            self.asked.append(sentence)
            body = sentence.rstrip(".")
            if " in " in body:
                head, tail = body.split(" in ", 1)
                good = f"In {tail}, {head}."
            else:
                good = f"It is true that {body}."
            out.append([good, sentence.replace("1990", "2019"), sentence][:k])
        return out


def test_paraphrases_are_cached_with_lineage_and_deleted_with_their_source(
        tmp_path: Path) -> None:
    store = CorpusStore(tmp_path / "corpus.sqlite3")
    ada = _chunk("Ada Lind was born in Osk in 1990. She studied law in Varn.", "ada")
    bo = _chunk("Bo Tan was born in Kell in 1985.", "bo")
    store.add_chunks([ada, bo])
    chunks = store.chunks(cycles=[1])
    lm = FakeLm()
    cfg = ParaphraseConfig(per_sentence=1, candidates=3)
    examples, stats = ensure_paraphrases(store, chunks, lm, cfg)
    assert stats.sentences == 3 and stats.generated == 9 and stats.kept == 3
    assert {e.source_id for e in examples} == {"ada", "bo"}
    ada_ex = next(e for e in examples if e.source_id == "ada")
    assert ada_ex.form == FORM and ada_ex.chunk_id == ada.chunk_id and ada_ex.cycle == 1
    assert ada_ex.completion == "In Osk in 1990, Ada Lind was born. In Varn, Ada Lind studied law."
    assert "2019" not in " ".join(e.completion for e in examples)
    stored = store.examples(forms=[FORM])
    assert {e.example_id for e in stored} == {e.example_id for e in examples}

    # a later cycle asks the model nothing and gets the same examples
    again, stats2 = ensure_paraphrases(store, chunks, lm, cfg)
    assert len(lm.asked) == 3 and stats2.generated == 0 and stats2.cached == 3
    assert {e.example_id for e in again} == {e.example_id for e in examples}

    # a delete takes the paraphrase examples and the cached candidates with it
    store.remove_source("ada")
    assert {e.source_id for e in store.examples(forms=[FORM])} == {"bo"}
    assert ada.chunk_id not in store.paraphrase_candidates([ada.chunk_id, bo.chunk_id])
    store.close()


def test_off_generates_nothing(tmp_path: Path) -> None:
    store = CorpusStore(tmp_path / "corpus.sqlite3")
    store.add_chunks([_chunk(EN)])
    lm = FakeLm()
    examples, stats = ensure_paraphrases(store, store.chunks(), lm, ParaphraseConfig(
        per_sentence=0))
    assert examples == [] and stats.generated == 0 and lm.asked == []
    assert store.examples(forms=[FORM]) == []
    store.close()


def test_a_chunk_deleted_during_generation_gets_no_paraphrases(tmp_path: Path) -> None:
    store = CorpusStore(tmp_path / "corpus.sqlite3")
    store.add_chunks([_chunk(EN, "ada")])
    chunks = store.chunks()

    def lm_then_delete(items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
        store.remove_source("ada")
        return FakeLm()(items, k)

    ensure_paraphrases(store, chunks, lm_then_delete, ParaphraseConfig())
    assert store.examples(forms=[FORM]) == []
    assert store.paraphrase_candidates([c.chunk_id for c, _ in chunks]) == {}
    store.close()


def test_a_tokenizer_without_chat_template_trains_without_paraphrases_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CorpusStore(tmp_path / "corpus.sqlite3")
    store.add_chunks([_chunk(EN)])
    done: list[object] = []
    augment = lm_augment(store, store.chunks(), ParaphraseConfig(per_sentence=2),
                         on_done=lambda examples, stats: done.append(stats))
    plain_tokenizer = type("Tok", (), {"chat_template": None})()
    with caplog.at_level(logging.WARNING):
        assert augment(plain_tokenizer, object()) == []
    assert "no chat template" in caplog.text and "training without LM paraphrases" in caplog.text
    assert done == [] and store.examples(forms=[FORM]) == []
    store.close()


# -- the real model ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_smollm2_paraphrases_keep_the_facts(tmp_path: Path, smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = smollm2_dir
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()  # as the trainer holds it; the paraphraser must hand it back so
    text = ("Ada Lind was born in Osk on March 2, 1990. Tomas Berg founded Bluelake Systems "
            "in 2011 with 40 employees. Lena Roth opened a bakery in Tarvik in 2015.")
    store = CorpusStore(tmp_path / "corpus.sqlite3")
    store.add_chunks([_chunk(text, "bios")])
    chunks = store.chunks()
    lm = LmParaphraser(tok, model, ParaphraseConfig(per_sentence=1, candidates=3))

    off, stats0 = ensure_paraphrases(store, chunks, lm, ParaphraseConfig(per_sentence=0))
    assert off == [] and stats0.generated == 0

    examples, stats = ensure_paraphrases(store, chunks, lm, lm.config)
    assert model.training and tok.padding_side == "right"
    assert stats.generated == 9
    cands = store.paraphrase_candidates([c.chunk_id for c, _ in chunks])[chunks[0][0].chunk_id]
    kept = [(s, t) for s, ts in cands.items() for t, ok in ts if ok]
    for source, para in kept:
        assert para.strip(" .").lower() != source.strip(" .").lower()
        for term in key_terms(source, "en"):
            assert term.lower() in para.lower(), (source, para)
    assert stats.kept == len(kept)
    if kept:  # the passage rewritten with the kept paraphrases
        assert len(examples) == 1 and examples[0].completion != text
    store.remove_source("bios")
    assert store.examples(forms=[FORM]) == []


# -- a cycle lends the trainer's model ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_cycle_trains_on_paraphrases_written_by_the_trainers_model(
        data_dir: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kinject.config import Settings, load_settings
    from kinject.finetune.jobs import corpus_path, run_cycle
    from kinject.finetune.registry import AdapterRegistry
    from kinject.finetune.trainer import TrainConfig

    lent: list[object] = []

    def fake_call(self: LmParaphraser, items: Sequence[tuple[str, str]], k: int
                  ) -> list[list[str]]:
        lent.append(self.model)
        return FakeLm()(items, k)

    monkeypatch.setattr(LmParaphraser, "__call__", fake_call)
    fast = TrainConfig(r=4, alpha=8, dropout=0.0, epochs=1, batch_size=8, eval_every=0,
                       checkpoint_every=0, fisher_samples=4, warmup_steps=0, device="cpu")
    with CorpusStore(corpus_path(data_dir)) as corpus:
        corpus.add_chunks([_chunk("Ida Brook was born in Fenwick in 1990.", "kb/ida"),
                           _chunk("Oren Vale was born in Tamsk in 1984.", "kb/oren")])
        plain = len(corpus.examples())

    def settings(n: int) -> Settings:
        return load_settings(data_dir=data_dir, models={"generator": str(tiny_lm_dir),
                                                        "device": "cpu"},
                             finetune={"lm_paraphrases": n},
                             gate={"tie_break_nll": 0.01, "max_ppl_increase": 10.0})

    result = run_cycle(settings(1), train_config=fast, early_stopping=False)
    assert len(lent) == 1 and type(lent[0]).__name__ == "PeftModelForCausalLM"
    assert result.metrics["paraphrases_generated"] == 4  # 2 sentences x 2 candidates
    assert result.metrics["paraphrases_kept"] == 2
    assert result.train_examples == plain + 2
    with CorpusStore(corpus_path(data_dir)) as corpus:
        paras = corpus.examples(forms=[FORM])
        assert [e.completion for e in paras if e.source_id == "kb/ida"] == [
            "In Fenwick in 1990, Ida Brook was born."]
        assert result.version is not None
        version = AdapterRegistry.for_data_dir(data_dir).get(result.version)
        assert version.corpus_manifest == CorpusStore.manifest(corpus.examples())
        corpus.remove_source("kb/ida")
        assert {e.source_id for e in corpus.examples(forms=[FORM])} == {"kb/oren"}
