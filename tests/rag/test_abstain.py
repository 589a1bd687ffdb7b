"""The reader's fitted abstention: a logistic model over the signals of a reading."""

import math

import pytest

from kinject.rag.abstain import DEFAULT_ABSTAIN, FEATURES, AbstainModel, feature


def _model(**weights: float) -> AbstainModel:
    return AbstainModel(weights=tuple(weights.get(f, 0.0) for f in FEATURES), threshold=0.5)


def test_a_reading_the_model_finds_unsure_of_is_not_given() -> None:
    """More probability on "no answer" as the first token makes a reading less likely right."""
    m = _model(none_logp=-1.0)
    sure = {"none_logp": -9.0, "pmi": 0.3}
    unsure = {"none_logp": 2.0, "pmi": 0.3}
    assert m.answers(sure) and not m.answers(unsure)
    assert m.p_right(sure) > 0.99 and m.p_right(unsure) < 0.2


def test_question_length_counts_on_a_log_scale_and_missing_signals_are_zero() -> None:
    assert feature({"q_tokens": 7.0}, "q_tokens") == pytest.approx(math.log(8.0))
    assert feature({}, "pmi") == 0.0
    assert _model().p_right({}) == pytest.approx(0.5)


def test_a_model_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="weights"):
        AbstainModel(weights=(1.0,))
    with pytest.raises(ValueError, match="threshold"):
        AbstainModel(threshold=1.5)


def test_the_shipped_model_is_fitted() -> None:
    """The default is the dev-fitted model, not a placeholder of zeros."""
    assert DEFAULT_ABSTAIN is not None
    assert any(w != 0.0 for w in DEFAULT_ABSTAIN.weights)
