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
from typing import Any

import numpy as np

# The signals, as Ct2Reader.choose computes them for the unit it would read:
#   pmi       its question-PMI (nats per question token, rank and language penalties taken off)
#   margin    its lead over the next-best unit weighed (0 when it is the only one)
#   base      mean log P(question) with no passage: how predictable the question is alone
#   q_tokens  the question's length in tokens (log1p)
#   rank      the retrieval rank of its passage (0: first)
#   named     the question names what it asks about (and the unit names it)
#   single    that unit was the only one naming it, read unweighed (pmi, margin, base: 0)
#   other_lang the unit is in another language than the question
#   ans_logp  the reading's mean token log-probability (how sure the model is of its words)
#   none_logp the log-probability the model gave NONE (no answer) as its first token
#   cover     the share of the words of the name asked about that the unit holds (0: no name)
FEATURES = ("pmi", "margin", "base", "q_tokens", "rank", "named", "single", "other_lang",
            "ans_logp", "none_logp", "cover")


@dataclass(frozen=True)
class AbstainModel:
    """P(right reading) = sigmoid(bias + sum(weight * (signal - mean) / scale)); the reader
    answers when it reaches ``threshold``."""

    weights: tuple[float, ...] = (0.0,) * len(FEATURES)
    means: tuple[float, ...] = (0.0,) * len(FEATURES)
    scales: tuple[float, ...] = (1.0,) * len(FEATURES)
    bias: float = 0.0
    threshold: float = 0.5
    # Also judge a reading of the one unit that names what is asked, read unweighed (its
    # PMI signals are then 0); otherwise that reading stands unless it says NONE.
    single: bool = False

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


def confidence(result: Any, none_id: int | None) -> dict[str, float]:
    """How sure the reading is: its mean token log-probability, and the log-probability of
    NONE (no answer) as its first token."""
    out = {"ans_logp": float(result.scores[0]) if result.scores else 0.0}
    logits = getattr(result, "logits", None)
    if logits and logits[0] and none_id is not None:
        first = np.asarray(logits[0][0], dtype=np.float64).ravel()
        top = first.max()
        out["none_logp"] = float(first[none_id] - top - np.log(np.exp(first - top).sum()))
    return out


# Fitted by `bench/fit_abstain.py --c 0.3 --wrong-cost 2` on the dev splits' probe dumps
# (session 13: 55 weighed readings, 28 right, of 153 dev questions). Judging the weighed
# readings only (a single naming unit's reading stands: 46 of 50 right, the 4 wrong ones not
# separable). Dev, old PMI bars -> this model (the same probe readings): realdocs answers right
# 0.571 -> 0.643 (English 0.55 -> 0.65, Chinese 0.625 = 0.625), abstention 1.00 = 1.00;
# rag_quality named questions en 0.893 / zh 0.929 unchanged, unknown entities abstained 1.00 =
# 1.00, questions naming nothing answered 0.33 -> 0.58 with 0.958 (was 1.00) of the 24
# unanswerable abstained. Leave-one-out (each question judged by a fit without it): realdocs
# 0.607, naming nothing 0.42 / 0.92. The weights say what carries it: PMI and its margin over
# the runner-up up, P(NONE) down.
DEFAULT_ABSTAIN: AbstainModel | None = AbstainModel(
    weights=(0.8681, 0.6094, -0.2486, 0.1802, 0.1438, 0.0655, 0.0, 0.1296, 0.1298, -0.8332, 0.0),
    means=(1.3258, 0.8426, -5.005, 2.5441, 0.2727, 0.2364, 0.0, 0.0364, -0.2446, -7.9227, 0.0),
    scales=(1.4159, 1.0083, 1.4744, 0.3349, 0.5545, 0.4248, 1.0, 0.1872, 0.276, 3.1462, 1.0),
    bias=0.1909, threshold=0.51)
