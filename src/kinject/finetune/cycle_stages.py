"""The stages of one fine-tuning cycle once it knows where it starts (finetune/cycle.py):
plan what to train on, train, register the candidate, gate it against what serves now, and
promote or reject it."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kinject.errors import Cancelled
from kinject.finetune.job_store import CANCELLED
from kinject.finetune.memory import release_memory
from kinject.finetune.paths import finetune_dir
from kinject.types import TrainingExample, content_hash

if TYPE_CHECKING:
    from kinject.finetune.augment import QAPair
    from kinject.finetune.cycle import CycleConfig, CycleResult, CycleStart
    from kinject.finetune.evaluate import EvalQuestion
    from kinject.finetune.ewc import EwcState
    from kinject.finetune.gate import GateReport
    from kinject.finetune.registry import AdapterRegistry
    from kinject.finetune.replay import ReplayBuffer
    from kinject.finetune.trainer import TrainConfig
    from kinject.protocols import CorpusSource
    from kinject.types import AdapterVersion

log = logging.getLogger(__name__)

Augment = Callable[[Any, Any], list[TrainingExample]]


@dataclass
class _Plan:
    """What one cycle trains on and asks its gate."""

    train: list[TrainingExample]
    replay: list[TrainingExample]
    replay_buf: ReplayBuffer
    stop_qs: list[EvalQuestion]
    gate_qs: list[EvalQuestion]
    old_qs: list[EvalQuestion]
    ewc: EwcState | None
    config: TrainConfig
    paraphrased: list[TrainingExample] = field(default_factory=list)
    para_metrics: dict[str, float] = field(default_factory=dict)


def train_and_gate(cfg: CycleConfig, start: CycleStart) -> CycleResult:
    """Train a candidate from ``start``, register it, gate it, promote or reject it."""
    from kinject.finetune.cycle import CycleResult

    plan = _plan(cfg, start)
    candidate, train, metrics = _train(cfg, start, plan)
    # A delete that arrived while training taints the candidate before the gate sees it.
    newly, change = start.registry.taint_missing(start.corpus.sources())
    cfg.tell(change)
    candidate = start.registry.get(candidate.version)
    report_d, scores, status = _judge(cfg, start, plan, candidate)
    if status == "promoted":
        plan.replay_buf.offer(train)
    log.info("cycle done: %s %s", status, candidate.version[:12])
    init = start.init
    return CycleResult(status=status, version=candidate.version,
                       parent=init.version if init else None, corpus_cycle=start.closed,
                       train_examples=len(train), report=report_d,
                       metrics={**metrics, **_finite(scores)}, tainted=start.tainted + newly,
                       seconds=time.perf_counter() - start.t0)


def _plan(cfg: CycleConfig, start: CycleStart) -> _Plan:
    from kinject.finetune.ewc import EwcState
    from kinject.finetune.registry import EWC_STATE
    from kinject.finetune.replay import ReplayBuffer
    from kinject.finetune.trainer import TrainConfig

    settings, corpus, since, init = cfg.settings, start.corpus, start.since, start.init
    gs = settings.gate
    train, new_qs, old_qs = _read_corpus(corpus, since, start.closed, gs.max_questions)
    replay_buf = ReplayBuffer(corpus, capacity=settings.finetune.replay_capacity,
                              seed=settings.finetune.seed)
    replay_buf.catch_up(since)  # what the adapter trained from holds, even if not gated in
    train_ids = {e.example_id for e in train}
    replay = [e for e in replay_buf.examples() if e.example_id not in train_ids and
              e.cycle <= since]
    stop_qs, gate_qs = _split_held_out(new_qs)
    ewc = None
    if init is not None and (start.registry.path(init.version) / EWC_STATE).is_file():
        ewc = EwcState.load(start.registry.path(init.version) / EWC_STATE)
    config = cfg.train_config or TrainConfig.from_settings(
        settings.finetune, settings.models.device, settings.models.dtype)
    log.info("cycle over corpus cycles %d..%d: %d example(s), %d replay, from %s",
             since + 1, start.closed, len(train), len(replay),
             init.version[:12] if init else "the base model")
    return _Plan(train=train, replay=replay, replay_buf=replay_buf, stop_qs=stop_qs,
                 gate_qs=gate_qs, old_qs=old_qs, ewc=ewc, config=config)


def _read_corpus(corpus: CorpusSource, since: int, closed: int, max_questions: int
                 ) -> tuple[list[TrainingExample], list[EvalQuestion], list[EvalQuestion]]:
    """What a cycle over corpus cycles ``since``+1..``closed`` trains on, and the questions
    of those cycles (new) and of the ones before (old)."""
    new_cycles = range(since + 1, closed + 1)
    return (corpus.examples(cycles=new_cycles),
            _questions(corpus.qa_pairs(cycles=new_cycles), max_questions, "new"),
            _questions(corpus.qa_pairs(cycles=range(1, since + 1)), max_questions, "old"))


def _augmenter(cfg: CycleConfig, start: CycleStart, plan: _Plan) -> Augment | None:
    """The trainer's ``augment`` hook when LM paraphrases are on: what it makes lands in
    ``plan.paraphrased`` and its counts in ``plan.para_metrics``."""
    if cfg.settings.finetune.lm_paraphrases <= 0:
        return None
    from kinject.finetune.paraphrase import ParaphraseConfig, ParaphraseStats, lm_augment

    def record(examples: list[TrainingExample], stats: ParaphraseStats) -> None:
        plan.paraphrased.extend(examples)
        plan.para_metrics.update(stats.to_metrics())
        cfg.report({"phase": "paraphrase", **stats.to_metrics()})

    # the same hook a launched job hands the trainer (kinject.finetune.launch)
    corpus = start.corpus
    lm = lm_augment(corpus, corpus.chunks(cycles=range(start.since + 1, start.closed + 1)),
                    ParaphraseConfig.from_settings(cfg.settings.finetune), on_done=record)

    def augment(tok: Any, model: Any) -> list[TrainingExample]:
        cfg.check("paraphrasing")
        cfg.note(stage="paraphrasing", progress=0.01)
        return lm(tok, model)

    return augment


def _train(cfg: CycleConfig, start: CycleStart, plan: _Plan
           ) -> tuple[AdapterVersion, list[TrainingExample], dict[str, Any]]:
    """Train and register the candidate; returns it, what it trained on and its metrics."""
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.general_text import general_train
    from kinject.finetune.trainer import LoraTrainer

    settings, registry, init = cfg.settings, start.registry, start.init
    augment = _augmenter(cfg, start, plan)
    cfg.note(stage="training", progress=0.02)

    def on_progress(event: dict[str, Any]) -> None:
        if event.get("phase") == "train" and event.get("total_steps"):
            cfg.note(progress=round(0.02 + 0.78 * event["step"] / event["total_steps"], 4),
                     stage="training")
        cfg.report(event)

    result = LoraTrainer(plan.config).train(
        start.base_dir, plan.train, _as_examples(plan.stop_qs) if cfg.early_stopping else [],
        finetune_dir(settings.data_dir) / "run",
        init_adapter=registry.path(init.version) if init is not None else None, ewc=plan.ewc,
        replay=plan.replay, general=general_train(path=settings.finetune.general_text),
        progress=on_progress, augment=augment, should_stop=cfg.should_stop())
    release_memory()  # the trainer's model and tensors, before the gate loads its own
    cfg.check("registering the candidate")
    train_ids = {e.example_id for e in plan.train}
    train = [*plan.train, *(e for e in plan.paraphrased if e.example_id not in train_ids)]
    lineage = CorpusStore.sources_of(train) | CorpusStore.sources_of(plan.replay)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    metrics.update(plan.para_metrics)
    metrics.update(seconds=result.seconds, tokens_per_s=result.tokens_per_s,
                   step_time_s=result.step_time_s)
    version = registry.add(
        result.adapter_dir, base_model=settings.models.generator,
        base_model_hash=start.base_hash, parent=init.version if init else None,
        corpus_manifest=CorpusStore.manifest([*train, *plan.replay]), lineage=lineage,
        corpus_cycle=start.closed, train_config=result.config or plan.config.to_dict(),
        metrics=metrics, ewc_state=result.ewc_path)
    return version, train, metrics


def _judge(cfg: CycleConfig, start: CycleStart, plan: _Plan, candidate: AdapterVersion
           ) -> tuple[dict[str, Any], dict[str, float], str]:
    """Gate the candidate and record the verdict (promoting it moves ACTIVE and announces
    it); returns the report, the candidate's scores and "promoted" or "rejected"."""
    registry = start.registry
    cfg.note(stage="gate", progress=0.85)
    cfg.report({"phase": "gate", "questions": len(plan.gate_qs) + len(plan.old_qs)})
    baseline = registry.active()
    displaced = _displaced_reference(registry, baseline, start.base_hash)
    try:
        report = _gate(cfg, start, plan, candidate, baseline, displaced)
    except Cancelled as exc:  # registered but never judged: kept, rejected, never served
        if registry.get(candidate.version).status == "candidate":
            registry.set_status(candidate.version, "rejected", {
                "promote": False, "reasons": [f"the gate did not finish: {CANCELLED} ({exc})"]})
        raise
    report_d = {**report.to_dict(), "baseline_version": baseline,
                "reference_version": displaced}
    scores = {"new_accuracy": report.candidate.new_accuracy,
              "retention_accuracy": report.candidate.retention_accuracy,
              "general_ppl": report.candidate.general_ppl, "new_nll": report.candidate.new_nll}
    candidate = registry.get(candidate.version)  # a delete may have tainted it meanwhile
    if candidate.status == "tainted":  # the verdict beside what tainted it
        registry.set_status(candidate.version, "tainted", {**candidate.report, **report_d},
                            _finite(scores))
        return report_d, scores, "rejected"
    if report.promote:
        registry.set_status(candidate.version, "promoted", report_d, _finite(scores))
        cfg.tell(registry.activate(candidate.version, "promoted"))
        return report_d, scores, "promoted"
    registry.set_status(candidate.version, "rejected", report_d, _finite(scores))
    return report_d, scores, "rejected"


def _gate(cfg: CycleConfig, start: CycleStart, plan: _Plan, candidate: AdapterVersion,
          baseline: str | None, displaced: str | None) -> GateReport:
    from kinject.finetune.evaluate import ClosedBookEvaluator
    from kinject.finetune.gate import GateConfig, run_gate
    from kinject.finetune.general_text import gate_sample
    from kinject.models import select_device

    settings, registry, gs = cfg.settings, start.registry, cfg.settings.gate
    cfg.check("the gate")
    evaluator = ClosedBookEvaluator(start.base_dir, device=select_device(settings.models.device),
                                    max_new_tokens=gs.max_new_tokens,
                                    should_stop=cfg.should_stop())
    evaluator.add_adapter("candidate", registry.path(candidate.version))
    if baseline is not None:
        evaluator.add_adapter("baseline", registry.path(baseline))
    # After a delete forced serving back, the retrain is held to the perplexity bar of the
    # version it replaces (gate.py); only that version's general-text perplexity is measured.
    if displaced is not None:
        evaluator.add_adapter("displaced", registry.path(displaced))
    return run_gate(evaluator, "candidate", "baseline" if baseline else None, plan.gate_qs,
                    plan.old_qs, gate_sample(gs.general_texts, settings.finetune.general_text),
                    GateConfig(max_retention_drop=gs.max_retention_drop,
                               max_ppl_increase=gs.max_ppl_increase,
                               min_new_gain=gs.min_new_gain, tie_break_nll=gs.tie_break_nll),
                    tainted=candidate.status == "tainted",
                    reference="displaced" if displaced is not None else None)


def _displaced_reference(registry: AdapterRegistry, baseline: str | None, base_hash: str
                         ) -> str | None:
    """The version a delete displaced, if its weights are still there and fit this base."""
    from kinject.finetune.registry import WEIGHTS

    displaced = registry.displaced_by_taint()
    if displaced is None or displaced == baseline:
        return None
    if not (registry.versions_dir / displaced / WEIGHTS).is_file():
        log.warning("adapter %s, displaced by a delete, is gone: the gate measures from "
                    "what serves now", displaced[:12])
        return None
    meta = registry.get(displaced)
    if meta.base_model_hash and meta.base_model_hash != base_hash:
        return None
    return displaced


def _questions(pairs: Sequence[QAPair], limit: int, salt: str) -> list[EvalQuestion]:
    from kinject.finetune.evaluate import EvalQuestion

    qs = [EvalQuestion(p.question, p.answer, p.source_id, p.cycle) for p in pairs
          if p.question.strip() and p.answer.strip()]
    qs.sort(key=lambda q: content_hash(salt, q.question, q.answer))
    return qs[:limit]


def _split_held_out(qs: list[EvalQuestion]) -> tuple[list[EvalQuestion], list[EvalQuestion]]:
    """A quarter for the trainer's early stopping, the rest for the gate (all for both when
    there are too few to split)."""
    if len(qs) < 8:
        return qs, qs
    stop = [q for q in qs if int(content_hash("stop", q.question)[:2], 16) < 64]
    gate = [q for q in qs if q not in stop]
    return (stop, gate) if stop and gate else (qs, qs)


def _as_examples(qs: Sequence[EvalQuestion]) -> list[TrainingExample]:
    return [TrainingExample(example_id=content_hash("held-out", q.question), chunk_id="eval",
                            source_id=q.source_id or "eval", prompt=q.question,
                            completion=q.answer, form="qa", cycle=q.cycle) for q in qs]


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, int | float) and math.isfinite(v)}
