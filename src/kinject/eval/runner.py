"""Runs a question set against one target (a route and a model) and scores every answer.

The answers come from an :class:`Asker`: the facade in this process
(:class:`FacadeAsker`) or a server's ``POST /v1/ask`` (:class:`HttpAsker`), so the same
report comes out whichever way kinject is reached.

Scoring rules (README, "Evaluating"):
- the ``[n]`` citation markers are taken out of the answer before it is compared;
- an answer that abstains is scored as the empty answer, so it scores 0 on a question that
  has a reference;
- on a question whose reference is empty or null the right thing is to abstain: every
  answer metric is 1 when the answer abstained and 0 when it did not;
- a metric that does not apply (entity F1 where the reference names no entity, citation
  precision where nothing was cited) is null and left out of the means.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kinject.errors import KinjectError
from kinject.eval import metrics as m
from kinject.eval.dataset import EvalItem
from kinject.rag.sentences import strip_markers

if TYPE_CHECKING:
    import httpx

    from kinject.app import Kinject

log = logging.getLogger(__name__)

ANSWER_METRICS = ("exact_match", "contains", "token_f1", "rouge_l", "bleu", "entity_f1")
ITEM_METRICS = (*ANSWER_METRICS, "citation_precision", "citation_recall")
# Aggregate numbers a --fail-under bound may name (all: higher is better).
GATE_METRICS = (*ITEM_METRICS, "abstention_recall", "answered_rate")


class EvalRunError(KinjectError):
    """A question could not be asked (the server refused it, the model is unknown, ...)."""

    code = "eval_failed"


@dataclass(frozen=True)
class AskResult:
    text: str
    cited: tuple[str, ...]
    abstained: bool
    route: str | None
    adapter_version: str | None
    latency_s: float
    cached: bool = False  # served from the answer cache: its latency is not the model's


class Asker(Protocol):
    def __call__(self, question: str) -> AskResult: ...


@dataclass(frozen=True)
class Target:
    """What answers: a route and a model (None: the active adapter; "base": no adapter; or
    an adapter version)."""

    route: str = "rag"
    model: str | None = None

    @property
    def label(self) -> str:
        model = "kinject" if self.model is None else (
            "kinject-base" if self.model == "base" else f"kinject@{self.model}")
        return f"{self.route} / {model}"


def model_arg(spec: str | None) -> str | None:
    """The facade's model for ``kinject``, ``kinject-base``/``base``, ``kinject@<v>`` or
    a bare version."""
    if spec is None or spec in ("", "kinject", "active"):
        return None
    if spec in ("kinject-base", "base"):
        return "base"
    return spec.removeprefix("kinject@") or None


class FacadeAsker:
    """Asks the KinjectService of this process."""

    def __init__(self, service: Kinject, target: Target, k: int | None = None) -> None:
        self.service, self.target, self.k = service, target, k

    def __call__(self, question: str) -> AskResult:
        t0 = time.perf_counter()
        a = self.service.ask(question, self.k, None, self.target.route, model=self.target.model)
        return AskResult(a.text, tuple(c.source_id for c in a.citations), a.abstained,
                         a.route, a.adapter_version, time.perf_counter() - t0,
                         bool(a.timings.get("cached")))


class HttpAsker:
    """Asks a kinject server's ``POST /v1/ask`` (an httpx.Client with its base URL and key)."""

    def __init__(self, client: httpx.Client, target: Target, k: int | None = None) -> None:
        self.client, self.target, self.k = client, target, k

    def __call__(self, question: str) -> AskResult:
        import httpx

        body: dict[str, Any] = {"question": question, "route": self.target.route}
        if self.k is not None:
            body["k"] = self.k
        if self.target.model is not None:
            body["adapter"] = self.target.model
        t0 = time.perf_counter()
        try:
            r = self.client.post("/v1/ask", json=body)
        except httpx.HTTPError as exc:
            raise EvalRunError(f"POST {self.client.base_url}v1/ask failed: {exc}") from exc
        spent = time.perf_counter() - t0
        if r.status_code != 200:
            try:
                detail = r.json().get("error", {}).get("message", r.text)
            except ValueError:
                detail = r.text
            raise EvalRunError(f"POST /v1/ask answered {r.status_code}: {detail}")
        a = r.json()
        return AskResult(a["text"], tuple(c["source_id"] for c in a.get("citations", [])),
                         bool(a.get("abstained")), a.get("route"), a.get("adapter_version"),
                         spent, bool((a.get("timings") or {}).get("cached")))


def score(item: EvalItem, result: AskResult) -> dict[str, float | None]:
    """The item metrics of one answer (rules in the module's docstring)."""
    precision, recall = m.citation_scores(result.cited, item.sources)
    out: dict[str, float | None] = {"citation_precision": precision, "citation_recall": recall}
    if item.reference is None:
        right = float(result.abstained)
        out.update({name: right for name in ANSWER_METRICS})
        out["entity_f1"] = None
        return out
    lang = item.language or m.language(item.reference + item.question)
    text = "" if result.abstained else strip_markers(result.text)
    out.update({
        "exact_match": m.exact_match(text, item.reference),
        "contains": m.contains(text, item.reference),
        "token_f1": m.token_f1(text, item.reference),
        "rouge_l": m.rouge_l(text, item.reference),
        "bleu": m.bleu(text, item.reference, lang),
        "entity_f1": m.entity_f1(text, item.reference, lang),
    })
    if result.abstained:
        # a reference that normalises to no tokens ("A", "?") would match the empty answer
        out.update({k: 0.0 for k in ANSWER_METRICS if out[k] is not None})
    return out


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means of the item metrics, abstention numbers and latency percentiles of ``rows``."""
    out: dict[str, Any] = {"n": len(rows)}
    for name in ITEM_METRICS:
        out[name] = m.mean(r["metrics"][name] for r in rows)
    unanswerable = [r for r in rows if r["reference"] is None]
    answerable = [r for r in rows if r["reference"] is not None]
    out["n_unanswerable"] = len(unanswerable)
    out["abstention_rate"] = m.mean(float(r["abstained"]) for r in rows)
    # Of the questions that should be abstained on, the share that was; of the others, the
    # share that got an answer.
    out["abstention_recall"] = m.mean(float(r["abstained"]) for r in unanswerable)
    out["answered_rate"] = m.mean(float(not r["abstained"]) for r in answerable)
    # Answers from the cache (a question asked before in this process or server) would
    # pull the percentiles towards zero: they are counted, not timed.
    out["n_cached"] = sum(1 for r in rows if r.get("cached"))
    latencies = [r["latency_s"] for r in rows if not r.get("cached")]
    out["latency_p50_s"] = m.percentile(latencies, 50)
    out["latency_p95_s"] = m.percentile(latencies, 95)
    return out


def run_eval(items: Sequence[EvalItem], ask: Asker, target: Target,
             on_item: Callable[[], None] | None = None) -> dict[str, Any]:
    """The report of ``items`` asked through ``ask``: per item and aggregate (overall and
    by language)."""
    rows: list[dict[str, Any]] = []
    for item in items:
        result = ask(item.question)
        lang = item.language or m.language(item.question + (item.reference or ""))
        rows.append({
            "line": item.line, "id": item.id, "question": item.question,
            "reference": item.reference, "sources": list(item.sources), "language": lang,
            "answer": result.text, "abstained": result.abstained, "cited": list(result.cited),
            "route": result.route, "adapter_version": result.adapter_version,
            "latency_s": result.latency_s, "cached": result.cached,
            "metrics": score(item, result),
        })
        if on_item is not None:
            on_item()
    by_language = {lang: aggregate([r for r in rows if r["language"] == lang])
                   for lang in sorted({r["language"] for r in rows})}
    return {"target": {"route": target.route, "model": target.model, "label": target.label},
            "aggregate": aggregate(rows), "by_language": by_language, "items": rows}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two reports of the same set side by side: aggregate differences (b - a) and, per
    question, both answers and the differences of their metrics."""
    def delta(x: Any, y: Any) -> float | None:
        return None if x is None or y is None else y - x

    agg = {k: delta(v, b["aggregate"].get(k)) for k, v in a["aggregate"].items()
           if k != "n" and (v is None or isinstance(v, float | int))}
    items = []
    for ra, rb in zip(a["items"], b["items"], strict=True):
        diff = {k: delta(ra["metrics"][k], rb["metrics"][k]) for k in ITEM_METRICS}
        items.append({"line": ra["line"], "question": ra["question"],
                      "reference": ra["reference"], "answer_a": ra["answer"],
                      "answer_b": rb["answer"], "diff": diff,
                      "changed": any(v for v in diff.values())})
    return {"a": a["target"], "b": b["target"], "aggregate_diff": agg, "items": items}


def parse_bounds(specs: Sequence[str]) -> dict[str, float]:
    """``metric=value`` pairs; raises ValueError naming a bad one."""
    bounds: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or name not in GATE_METRICS:
            raise ValueError(f"--fail-under {spec!r}: expected METRIC=VALUE with METRIC one "
                             f"of {', '.join(GATE_METRICS)}")
        try:
            bounds[name] = float(value)
        except ValueError as exc:
            raise ValueError(f"--fail-under {spec!r}: {value!r} is not a number") from exc
        if not math.isfinite(bounds[name]):  # nothing is below NaN: the gate would pass
            raise ValueError(f"--fail-under {spec!r}: {value!r} is not a finite number")
    return bounds


def failures(aggregate_: dict[str, Any], bounds: dict[str, float], label: str = ""
             ) -> list[str]:
    """Why ``aggregate_`` fails ``bounds``: one line per metric below its bound (a metric
    that could not be measured fails too: a gate must not pass on what it did not see)."""
    out = []
    for name, bound in bounds.items():
        value = aggregate_.get(name)
        where = f"{label}: " if label else ""
        if value is None:
            out.append(f"{where}{name} was not measured (bound {bound:g})")
        elif value < bound:
            out.append(f"{where}{name} = {value:.4f} is below {bound:g}")
    return out


def evaluate(set_name: str, items: Sequence[EvalItem], targets: Sequence[Target],
             asker_for: Callable[[Target], Asker], bounds: dict[str, float] | None = None,
             on_item: Callable[[], None] | None = None) -> dict[str, Any]:
    """The whole report: one run per target (two make a comparison) and the gate's verdict
    on ``bounds`` (every run must meet every bound)."""
    reports = [run_eval(items, asker_for(t), t, on_item) for t in targets]
    out: dict[str, Any] = {"set": set_name, "n": len(items), "runs": reports}
    if len(reports) == 2:
        out["comparison"] = compare(reports[0], reports[1])
    bounds = bounds or {}
    failed = [f for r in reports
              for f in failures(r["aggregate"], bounds,
                                r["target"]["label"] if len(reports) > 1 else "")]
    out["gate"] = {"bounds": bounds, "failures": failed, "passed": not failed}
    return out


def compare_targets(a: str, b: str, route: str, model: str | None) -> list[Target]:
    """The two targets of ``--compare A B``: each a route (rag, adapter, both, auto) with
    the model given, or a model (``kinject@<version>``, a version, ``base``) on the route
    given."""
    from kinject.rag.routes import ROUTES

    def one(spec: str) -> Target:
        if spec in ROUTES:
            return Target(spec, model)
        return Target(route, model_arg(spec))

    return [one(a), one(b)]
