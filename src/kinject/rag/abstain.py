"""Whether the reader answers: a logistic model over the signals it already computes.

One question-PMI bar could not tell an answering passage of a real manual (PMI 0.4-1.4) from a
passage about something else (up to 1.2): the same score means more when the passage names what
is asked, when it leads its runner-up by a wide margin, when retrieval ranked it first, and when
the question is long (a long question's words are predictable from any passage of its topic). A
logistic regression weighs these signals into the probability that the reading is right; below
``threshold`` the reader abstains.

The coefficients are fitted on the dev splits only (``bench/rag_quality.py --split dev`` and
``bench/realdocs.py --split dev`` run with ``--dump-reader``), by ``bench/fit_abstain.py``,
which prints the :class:`AbstainModel` below; the signals are shapes of scores, never words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# The signals, as Ct2Reader.choose computes them for the unit it would read:
#   pmi       its question-PMI (nats per question token, rank and language penalties taken off)
#   margin    its lead over the next-best unit weighed (0 when it is the only one)
#   base      mean log P(question) with no passage: how predictable the question is alone
#   q_tokens  the question's length in tokens (log1p)
#   rank      the retrieval rank of its passage (0: first)
#   named     the question names what it asks about (and the unit names it)
#   other_lang the unit is in another language than the question
FEATURES = ("pmi", "margin", "base", "q_tokens", "rank", "named", "other_lang")


@dataclass(frozen=True)
class AbstainModel:
    """P(right reading) = sigmoid(bias + sum(weight * (signal - mean) / scale)); the reader
    answers when it reaches ``threshold``."""

    weights: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    scales: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    bias: float = 0.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        n = len(FEATURES)
        if not len(self.weights) == len(self.means) == len(self.scales) == n:
            raise ValueError(f"an AbstainModel needs {n} weights, means and scales")
        if any(s <= 0 for s in self.scales):
            raise ValueError("scales must be > 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def p_right(self, signals: Mapping[str, float]) -> float:
        z = self.bias
        for name, w, m, s in zip(FEATURES, self.weights, self.means, self.scales, strict=True):
            z += w * (feature(signals, name) - m) / s
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def answers(self, signals: Mapping[str, float]) -> bool:
        return self.p_right(signals) >= self.threshold


def feature(signals: Mapping[str, float], name: str) -> float:
    """One feature from the reader's signals (q_tokens on a log scale)."""
    value = float(signals.get(name, 0.0))
    return math.log1p(value) if name == "q_tokens" else value
