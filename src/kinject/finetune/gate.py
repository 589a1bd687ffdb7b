"""The promotion gate: a candidate adapter serves only if it is better than what serves now.

It scores the candidate and the serving baseline (the ACTIVE adapter, or the base model) on
the same held-out questions, asked closed-book in forms the training never used:

- new knowledge: this cycle's facts. The candidate must answer more of them exactly. When
  both answer the same share (a small model on a small set often ties, at 0 early on), a drop
  of at least ``tie_break_nll`` in the reference answers' mean negative log-likelihood
  counts as an improvement; ``tie_break_nll <= 0`` turns that off (accuracy only).
- retention: earlier cycles' facts. Accuracy may fall by at most ``max_retention_drop``.
- general text: perplexity may rise by at most ``max_ppl_increase`` (relative), measured on
  the same held-out paragraphs for both (:func:`kinject.finetune.general_text.gate_sample`:
  a fixed sample of a real corpus that training never sees).
- a tainted candidate (trained on deleted data) is refused whatever its scores.

After a delete has forced serving back (to an older adapter or the base model), the next
cycle retrains what the displaced adapter held, less the deleted data. Measured against the
base model's perplexity, such a retrain fails where the adapter it replaces passed, and the
delete would cost every fact injected since. So when a ``reference`` is given (the version
the delete displaced), the perplexity bound starts from the higher of the two: the retrain is
held to the bar the displaced version met. New knowledge must still beat what serves now.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kinject.finetune.evaluate import ClosedBookEvaluator, EvalQuestion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    max_retention_drop: float = 0.05
    max_ppl_increase: float = 0.10
    min_new_gain: float = 0.0
    tie_break_nll: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_retention_drop <= 1.0:
            raise ValueError(f"max_retention_drop must be in [0, 1], got "
                             f"{self.max_retention_drop}")
        if self.max_ppl_increase < 0.0:
            raise ValueError(f"max_ppl_increase must be >= 0, got {self.max_ppl_increase}")
        if self.min_new_gain < 0.0:
            raise ValueError(f"min_new_gain must be >= 0, got {self.min_new_gain}")


@dataclass(frozen=True)
class Scores:
    """What the gate measures for one model (base + adapter)."""

    new_accuracy: float
    new_nll: float
    retention_accuracy: float
    general_ppl: float
    n_new: int = 0
    n_retention: int = 0
    n_general: int = 0  # held-out general-text paragraphs the perplexity is measured on
    samples: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateReport:
    promote: bool
    reasons: tuple[str, ...]
    candidate: Scores
    baseline: Scores
    baseline_version: str | None
    config: GateConfig
    # the version a delete displaced, whose perplexity set the bound (None: the baseline's)
    reference_version: str | None = None
    reference_ppl: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return _finite(d)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a measure that could not be taken (no questions) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def decide(candidate: Scores, baseline: Scores, config: GateConfig,
           tainted: bool = False, reference_ppl: float = math.nan
           ) -> tuple[bool, tuple[str, ...]]:
    """Whether to promote, and why (or why not), in words a reader of the report follows.

    ``reference_ppl``: the general-text perplexity of the version a delete displaced; when
    higher than the baseline's, the perplexity bound starts from it (module docstring).
    """
    ok, reasons = True, []
    if tainted:
        ok = False
        reasons.append("tainted: trained on data that has since been deleted")
    gain = candidate.new_accuracy - baseline.new_accuracy
    if candidate.n_new == 0:
        ok = False
        reasons.append("no held-out questions on new knowledge: nothing shows an improvement")
    elif gain > config.min_new_gain:
        reasons.append(f"new-knowledge accuracy rose {baseline.new_accuracy:.3f} -> "
                       f"{candidate.new_accuracy:.3f}")
    elif (abs(gain) < 1e-9 and config.tie_break_nll > 0
          and baseline.new_nll - candidate.new_nll >= config.tie_break_nll):
        reasons.append(f"new-knowledge accuracy tied at {candidate.new_accuracy:.3f}; answer "
                       f"NLL fell {baseline.new_nll:.3f} -> {candidate.new_nll:.3f}")
    else:
        ok = False
        reasons.append(f"new-knowledge accuracy did not improve: {baseline.new_accuracy:.3f} "
                       f"-> {candidate.new_accuracy:.3f} (NLL {baseline.new_nll:.3f} -> "
                       f"{candidate.new_nll:.3f})")
    if candidate.n_retention:
        drop = baseline.retention_accuracy - candidate.retention_accuracy
        if drop > config.max_retention_drop + 1e-9:
            ok = False
            reasons.append(f"retention fell {drop:.3f} (> {config.max_retention_drop:.3f}): "
                           f"{baseline.retention_accuracy:.3f} -> "
                           f"{candidate.retention_accuracy:.3f}")
        else:
            reasons.append(f"retention within bounds: {baseline.retention_accuracy:.3f} -> "
                           f"{candidate.retention_accuracy:.3f}")
    if math.isfinite(candidate.general_ppl) and math.isfinite(baseline.general_ppl):
        start, whose = baseline.general_ppl, ""
        if math.isfinite(reference_ppl) and reference_ppl > start:
            start = reference_ppl
            whose = (f" (bound from the version a delete displaced; serving now: "
                     f"{baseline.general_ppl:.2f})")
        limit = start * (1.0 + config.max_ppl_increase)
        if candidate.general_ppl > limit:
            ok = False
            reasons.append(f"general-text perplexity rose {start:.2f} -> "
                           f"{candidate.general_ppl:.2f} (limit {limit:.2f}){whose}")
        else:
            reasons.append(f"general-text perplexity within bounds: "
                           f"{start:.2f} -> {candidate.general_ppl:.2f}{whose}")
    return ok, tuple(reasons)


def score(evaluator: ClosedBookEvaluator, adapter: str | None,
          new: Sequence[EvalQuestion], retention: Sequence[EvalQuestion],
          general: Sequence[str]) -> Scores:
    with evaluator.use(adapter):
        new_res = evaluator.accuracy(new)
        ret_res = evaluator.accuracy(retention)
        return Scores(
            new_accuracy=new_res.accuracy if new else 0.0,
            new_nll=evaluator.answer_nll(new),
            retention_accuracy=ret_res.accuracy if retention else 0.0,
            general_ppl=evaluator.perplexity(general),
            n_new=len(new), n_retention=len(retention), n_general=len(general),
            samples={"new": new_res.to_dict()["examples"],
                     "retention": ret_res.to_dict()["examples"]},
        )


def run_gate(evaluator: ClosedBookEvaluator, candidate: str, baseline: str | None,
             new: Sequence[EvalQuestion], retention: Sequence[EvalQuestion],
             general: Sequence[str], config: GateConfig, *, tainted: bool = False,
             reference: str | None = None) -> GateReport:
    """Score ``candidate`` and ``baseline`` (adapter names loaded in ``evaluator``; None is
    the base model) and decide. ``reference``: an adapter name loaded in ``evaluator``, the
    version a delete displaced; only its general-text perplexity is measured."""
    cand = score(evaluator, candidate, new, retention, general)
    base = score(evaluator, baseline, new, retention, general)
    ref_ppl = math.nan
    if reference is not None and general:
        with evaluator.use(reference):
            ref_ppl = evaluator.perplexity(general)
    promote, reasons = decide(cand, base, config, tainted=tainted, reference_ppl=ref_ppl)
    log.info("gate: %s (%s)", "promote" if promote else "reject", "; ".join(reasons))
    return GateReport(promote=promote, reasons=reasons, candidate=cand, baseline=base,
                      baseline_version=baseline, config=config,
                      reference_version=reference, reference_ppl=ref_ppl)
