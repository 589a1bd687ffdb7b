"""The promotion gate and the closed-book scoring it rests on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _adapter_helpers import make_adapter

from kinject.errors import Cancelled
from kinject.finetune.evaluate import ClosedBookEvaluator, EvalQuestion, exact_match, normalise
from kinject.finetune.gate import GateConfig, Scores, decide, run_gate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("prediction", "answer", "ok"), [
    ("Fenwick", "Fenwick", True),
    ("  fenwick. ", "Fenwick", True),
    ("She was born in Fenwick.", "Fenwick", True),
    ("Harbour-Board", "Harbour Board", True),
    ("Ｆｅｎｗｉｃｋ", "Fenwick", True),  # full-width letters
    ("Fenwicks", "Fenwick", False),  # whole words only
    ("Duskmoor Observatory", "the Duskmoor Observatory", True),  # articles do not decide
    ("the Duskmoor Observatory [1]", "Duskmoor Observatory", True),
    ("the Observatory", "the Duskmoor Observatory", False),
    ("Oskarn", "Fenwick", False),
    ("Fenwick " + "and more words " * 10, "Fenwick", False),  # not a short answer
    ("她出生在大理。", "大理", True),
    ("泉州", "大理", False),
    ("", "Fenwick", False),
])
def test_exact_match_normalises_and_accepts_a_short_containing_answer(
        prediction: str, answer: str, ok: bool) -> None:
    assert exact_match(prediction, answer) is ok


def test_normalise() -> None:
    assert normalise("  The  CITY, is:\tFenwick! ") == "the city is fenwick"


def _s(new: float, nll: float = 2.0, ret: float = 0.5, ppl: float = 10.0, n_new: int = 10,
       n_ret: int = 10) -> Scores:
    return Scores(new_accuracy=new, new_nll=nll, retention_accuracy=ret, general_ppl=ppl,
                  n_new=n_new, n_retention=n_ret)


def test_decide_promotes_only_a_better_candidate_within_bounds() -> None:
    cfg = GateConfig(max_retention_drop=0.05, max_ppl_increase=0.10, tie_break_nll=0.05)
    base = _s(0.2)
    assert decide(_s(0.5), base, cfg)[0] is True
    ok, why = decide(_s(0.2), base, cfg)
    assert not ok and "did not improve" in why[0]
    assert decide(_s(0.1), base, cfg)[0] is False
    # retention: a drop of 0.05 is allowed, 0.10 is not
    assert decide(_s(0.5, ret=0.45), base, cfg)[0] is True
    ok, why = decide(_s(0.5, ret=0.40), base, cfg)
    assert not ok and any("retention fell" in r for r in why)
    # general text: +10 % perplexity allowed, +20 % not
    assert decide(_s(0.5, ppl=10.9), base, cfg)[0] is True
    ok, why = decide(_s(0.5, ppl=12.0), base, cfg)
    assert not ok and any("perplexity rose" in r for r in why)
    # a tie in accuracy: the answers' likelihood decides, when the tie-break is on
    assert decide(_s(0.2, nll=1.9), base, cfg)[0] is True
    assert decide(_s(0.2, nll=1.99), base, cfg)[0] is False
    assert decide(_s(0.2, nll=1.0), base, GateConfig(tie_break_nll=0.0))[0] is False
    # tainted or nothing to judge: never
    ok, why = decide(_s(0.9), base, cfg, tainted=True)
    assert not ok and "tainted" in why[0]
    assert decide(_s(0.9, n_new=0), base, cfg)[0] is False
    # no earlier facts yet: retention is not judged
    assert decide(_s(0.5, ret=0.0, n_ret=0), base, cfg)[0] is True


def test_after_a_delete_the_perplexity_bar_is_the_displaced_versions() -> None:
    cfg = GateConfig(max_ppl_increase=0.10)
    base = _s(0.0, ppl=10.0)  # the base model serves after the delete
    retrain = _s(0.6, ppl=12.0)
    ok, why = decide(retrain, base, cfg)
    assert not ok and any("perplexity rose 10.00 -> 12.00" in r for r in why)
    # the displaced adapter served at 11.5: the retrain may rise 10 % from there (12.65)
    ok, why = decide(retrain, base, cfg, reference_ppl=11.5)
    assert ok, why
    assert any("11.50 -> 12.00" in r and "displaced" in r and "serving now: 10.00" in r
               for r in why)
    assert not decide(_s(0.6, ppl=13.0), base, cfg, reference_ppl=11.5)[0]
    # a reference below the serving model's perplexity never loosens the bound
    ok, why = decide(retrain, base, cfg, reference_ppl=9.0)
    assert not ok and not any("displaced" in r for r in why)
    # new knowledge must still beat what serves now
    ok, why = decide(_s(0.0, ppl=10.5), base, cfg, reference_ppl=11.5)
    assert not ok and "did not improve" in why[0]


def test_gate_config_names_bad_values() -> None:
    with pytest.raises(ValueError, match="max_retention_drop"):
        GateConfig(max_retention_drop=1.5)
    with pytest.raises(ValueError, match="max_ppl_increase"):
        GateConfig(max_ppl_increase=-0.1)


def test_evaluator_scores_base_and_adapters_and_the_gate_writes_a_report(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_lm_dir, tmp_path / "a", seed=3, scale=1.0)
    ev = ClosedBookEvaluator(tiny_lm_dir, max_new_tokens=4)
    qs = [EvalQuestion("Which city is recorded for Ida Brook?", "Fenwick", "kb/ida"),
          EvalQuestion("When was the Marrow Institute founded?", "1987", "kb/m")]
    general = ["The Marrow Institute was founded in 1987."]
    base = ev.accuracy(qs)
    assert base.n == 2 and 0.0 <= base.accuracy <= 1.0 and len(base.predictions) == 2
    base_nll, base_ppl = ev.answer_nll(qs), ev.perplexity(general)
    assert base_nll > 0 and base_ppl > 1
    ev.add_adapter("a", adapter)
    with ev.use("a"):
        assert ev.answer_nll(qs) != pytest.approx(base_nll)
    with ev.use(None):  # the base is still there, unchanged
        assert ev.answer_nll(qs) == pytest.approx(base_nll, rel=1e-5)
        assert ev.perplexity(general) == pytest.approx(base_ppl, rel=1e-5)
    report = run_gate(ev, "a", None, qs, [], general, GateConfig())
    d = report.to_dict()
    assert d["candidate"]["n_new"] == 2 and d["candidate"]["n_retention"] == 0
    assert d["baseline"]["new_nll"] == pytest.approx(base_nll, rel=1e-5)
    assert d["reasons"] and isinstance(d["promote"], bool)
    assert d["reference_version"] is None and d["reference_ppl"] is None
    # a displaced version as the reference: its perplexity is measured and reported
    report = run_gate(ev, "a", None, qs, [], general, GateConfig(), reference="a")
    assert report.reference_version == "a"
    assert report.reference_ppl == pytest.approx(report.candidate.general_ppl, rel=1e-5)
    assert math.isnan(ev.answer_nll([]))


def test_a_stopped_evaluator_ends_the_gate_at_its_next_batch(tiny_lm_dir: Path) -> None:
    """A server shutting down mid-gate: the next batch of answers or scored text raises."""
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # the shutdown lands after the first batch

    ev = ClosedBookEvaluator(tiny_lm_dir, max_new_tokens=2, batch_size=1,
                             should_stop=should_stop)
    qs = [EvalQuestion("Which city is recorded for Ida Brook?", "Fenwick", "kb/ida"),
          EvalQuestion("When was the Marrow Institute founded?", "1987", "kb/m")]
    with pytest.raises(Cancelled, match="evaluation stopped"):
        run_gate(ev, None, None, qs, [], ["general text"], GateConfig())
    assert len(asked) == 2
    with pytest.raises(Cancelled):
        ev.perplexity(["general text"])
