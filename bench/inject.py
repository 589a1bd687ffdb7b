"""Knowledge injection through the product's road: what LoRA cycles put into the weights,
what they forget, what a delete takes out, against retrieval (RAG) on the same facts.

Everything goes the way a user's data goes. Each arm starts its own ``kinject serve`` (a
subprocess: embedded Kafka broker, an ingest worker, the index and corpus materialisers, the
API; its own data dir; settings by environment, SmolLM2 as the base model). Invented people
with eight kinds of facts each, in English and Chinese (``bench/inject_questions.py``), are
published as JSON records with ``POST /v1/records``; the bench waits until ``/v1/lineage``
shows them searchable and ``/v1/status`` shows the corpus holding them with no lag, starts a
cycle with ``POST /v1/finetune/jobs`` and follows ``GET /v1/finetune/jobs/{id}`` to its end
(the gate's decision and report: new-knowledge accuracy, retention, general-text perplexity
of the base or serving model and the candidate). Questions go to ``POST /v1/ask``: closed
book with ``route=adapter`` naming the version, RAG with ``route=rag``. They are phrased by
the bench's own generator, apart from the corpus builder's training and held-out templates
(checked before anything starts: no question occurs in what the builder makes of a record).

Arms (``--arms``), each a fresh server and data dir, the same people:

- ``ewc``: the settings a user gets (online EWC, replay, general-text replay and the KL term
  to the base model), with two departures a user makes by setting them: LoRA on every linear
  layer (``KINJECT_FINETUNE__LORA_TARGETS='["all-linear"]'``, about 3x more knowledge per
  minute than q_proj, v_proj on SmolLM2, ENVIRONMENT.md) and no held-out evaluations or
  checkpoints inside a cycle (each cycle trains every epoch); ``--quick`` trains 1 epoch, raises the
  learning rate (few steps) and samples fewer general-text paragraphs and questions in the
  gate. Cycle 1 on batch 1, cycle 2 on batch 2, then a delete of a quarter of batch 1 over
  HTTP and cycle 3, which retrains without them.
- ``plain``: the peer, plain LoRA (``EWC_LAMBDA=0``, ``REPLAY_RATIO=0``, ``GENERAL_RATIO=0``,
  ``KL_WEIGHT=0``), cycles 1 and 2 on the same batches.
- ``nokl``: the ``ewc`` arm without the KL term (``KL_WEIGHT=0``), cycle 1 only: how much
  general-text perplexity drift from the base model the KL term takes away, and what the
  gate decides without it.
- Retention options, cycles 1 and 2 each (reported side by side in ``retention_arms``):
  ``ewc_only`` (EWC + replay, no KL term), ``distill_only`` (no EWC; replay, and the KL term
  towards the previous adapter on general text and replay:
  ``DISTILL_TEACHER=previous``, ``DISTILL_ON=general+replay``), ``both`` (EWC and that
  distillation), ``mix721`` (the ``ewc`` settings with ``DATA_MIX=7:2:1``,
  general : domain : earlier-cycle text), ``replay1`` (the ``ewc`` settings with
  ``REPLAY_RATIO=1``: as many earlier-cycle examples as new ones, 0.25 by default).
  ``ewc`` and ``plain`` are reported there too.
  Not run by default: ``--arms ewc_only,distill_only,both`` (about 10 minutes an arm quick).

A cycle the gate rejects is activated anyway (``POST /v1/adapters/{version}/activate``, as an
operator may), so the next cycle starts from it and forgetting is measured on the same road;
``gate`` reports each decision. Reported (exact match after normalising; the answer may sit in
a short sentence):

- ``base_closed``, ``rag``: batch 1 closed book with the base model, and by RAG (the base
  model reading); ``lora_closed`` (cycle 1's adapter, closed book), ``lora_rag`` (RAG read
  with it; not in ``--quick``);
  ``closed_over_rag``: ``lora_closed / rag``;
- ``forget_ewc_replay``, ``forget_plain``: batch 1's drop from cycle 1 to cycle 2 per arm;
  ``new_after_cycle2`` (and ``_plain``): batch 2 after cycle 2; ``vs_plain``: the ratios;
- ``deleted_fact_before`` (the serving adapter on the people about to be deleted),
  ``deleted_fact_closed`` (cycle 3's adapter on the deleted people), ``deleted_fact_rag``
  (once the delete is applied) beside ``unseen_people_closed``, the same adapter on people it
  never saw (the chance bar: values come from short lists, so any adapter guesses some;
  ``_matched``: per language, weighted by the deleted people's language mix);
  ``deleted_private_closed`` / ``unseen_private_closed``: the same on the facts whose value no
  person still trained on holds (guessing from the others cannot reach them);
- ``cycles``: per arm and cycle the gate's decision, reasons, perplexities (base or serving
  model and candidate) and their ratio, training seconds, and seconds from publishing to the
  decision (``publish_to_promoted_s`` where it promoted);
- ``trainer_microbench`` (not with ``--quick`` unless ``--microbench``): an in-process
  micro-measurement of the trainer alone, not the road: optimizer-step time with the EWC
  penalty / without, steps interleaved on one model and batch.

Progress goes to stderr; the last stdout line is one JSON object; ``<out>/inject.png`` plots
accuracy and perplexity per cycle (``--out``, default ``bench/out``; needs matplotlib).

    python bench/inject.py --quick   # 2 people a batch (16 facts), 1 epoch, arms ewc + plain
    python bench/inject.py           # 8 people a batch (64 facts), 3 epochs, all three arms

Every answer asked for is a row of ``<out>/inject_answers.csv`` (arm, route, adapter, language,
kind of fact, question, wanted, got, right).
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

from _common import emit, environment, median, parse_args, progress  # noqa: E402
from inject_questions import Person, Question, leaks, people, questions  # noqa: E402

ARMS = ("ewc", "plain", "nokl", "ewc_only", "distill_only", "both", "mix721", "replay1")
DEFAULT_ARMS = ("ewc", "plain", "nokl")  # the retention arms only by --arms (2 cycles each)


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--people", type=int, default=None, help="people per batch")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the setting's (1 with --quick)")
    parser.add_argument("--lr", type=float, default=None,
                        help="default: the setting's (2e-3 with --quick: few steps)")
    parser.add_argument("--arms", default=None,
                        help="comma-separated, from ewc, plain, nokl (default: all three; "
                        "--quick: ewc,plain)")
    parser.add_argument("--generator", default="smollm2", help="base model (default SmolLM2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in each server (1 is faster on a busy machine)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="questions in flight at once (the server batches them)")
    parser.add_argument("--microbench", action=argparse.BooleanOptionalAction, default=None,
                        help="the in-process EWC step-time micro-measurement (default: on, "
                        "off with --quick)")
    parser.add_argument("--delete", type=int, default=None,
                        help="people of batch 1 deleted before cycle 3 (default: a quarter, "
                        "at least one)")
    parser.add_argument("--unseen", type=int, default=None,
                        help="people never published, the chance bar for the delete "
                        "(default: half a batch, at least one)")


# --- one `kinject serve` ------------------------------------------------------------------------


class Server:
    """`python -m kinject serve` in a subprocess on a data dir of its own."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str], key: str,
                 threads: int | None) -> None:
        self.name, self.key = name, key
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"{name}-serve.log"
        child = dict(os.environ)  # a user's own KINJECT_ settings apply to every arm
        child.update(env)
        child.update(KINJECT_DATA_DIR=str(data_dir), KINJECT_API__API_KEY=key,
                     KINJECT_KAFKA__PARTITIONS="1", PYTHONUNBUFFERED="1")
        child.pop("KINJECT_KAFKA__BOOTSTRAP_SERVERS", None)  # its own embedded broker
        child.pop("KINJECT_CONFIG", None)
        src = Path(__file__).resolve().parents[1] / "src"
        child["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src), child.get("PYTHONPATH", "")) if p)
        if threads:
            child["KINJECT_MODELS__THREADS"] = str(threads)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kinject", "serve", "--host", "127.0.0.1", "--port", "0"],
            env=child, stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()

        def drain() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                lines.put(raw.decode("utf-8", "replace"))

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 900
        self.url = ""
        while not self.url:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"kinject serve ({name}) did not start; its log:\n"
                                 + self.log_tail())
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if "kinject serving on " in line:
                self.url = line.split("kinject serving on ", 1)[1].strip()
        self.http = httpx.Client(base_url=self.url, timeout=900,
                                 headers={"Authorization": f"Bearer {key}"})
        self.wait(lambda: self.http.get("/readyz").status_code == 200, 600, "ready")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()

    def wait(self, done: Any, timeout_s: float, what: str, every_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.proc.poll() is not None:
                raise SystemExit(f"kinject serve ({self.name}) exited while waiting for "
                                 f"{what}; its log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: timed out waiting for {what}; serve log:\n"
                                 + self.log_tail())
            time.sleep(every_s)

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        r = self.http.post(path, json=body) if body is not None else self.http.post(path)
        if r.status_code >= 400:
            raise SystemExit(f"{self.name}: POST {path} -> {r.status_code} {r.text[:500]}")
        return r

    # -- what a user does ------------------------------------------------------------------

    def publish(self, persons: list[Person], expected_sources: int) -> dict[str, float]:
        """POST the people as JSON records; seconds until all are searchable and until the
        corpus holds them with no lag."""
        t0 = time.perf_counter()
        self.post("/v1/records", {"records": [
            {"source_id": p.source_id, "kind": "json", "content": p.content()}
            for p in persons]})
        waiting = {p.source_id for p in persons}

        def searchable() -> bool:
            for sid in sorted(waiting):
                r = self.http.get(f"/v1/lineage/{sid}")
                if r.status_code == 200 and r.json().get("chunks_now"):
                    waiting.discard(sid)
            return not waiting

        self.wait(searchable, 600, f"{len(persons)} records to be searchable")
        searchable_s = time.perf_counter() - t0
        self.wait(lambda: _corpus_caught_up(self.get("/v1/status"), expected_sources), 600,
                  f"the corpus to hold {expected_sources} sources")
        return {"searchable_s": searchable_s, "corpus_s": time.perf_counter() - t0}

    def delete(self, source_ids: list[str], expected_sources: int) -> None:
        self.post("/v1/records", {"records": [{"source_id": s, "op": "delete"}
                                              for s in source_ids]})

        def gone() -> bool:
            for sid in source_ids:
                r = self.http.get(f"/v1/lineage/{sid}")
                if r.status_code == 200 and r.json().get("chunks_now"):
                    return False
            return _corpus_caught_up(self.get("/v1/status"), expected_sources)

        self.wait(gone, 600, "the delete to reach the index and the corpus")

    def cycle(self, label: str) -> dict[str, Any]:
        """One fine-tuning job over HTTP, followed to its end."""
        started = self.post("/v1/finetune/jobs")
        where = started.headers["location"]
        last: tuple[str, float] = ("", -1.0)
        job: dict[str, Any] = {}

        def finished() -> bool:
            nonlocal last, job
            job = self.get(where)
            if job["stage"] != last[0] or job["progress"] >= last[1] + 0.2:
                progress(f"{self.name} {label}: {job['stage']} {job['progress']:.0%}")
                last = (job["stage"], job["progress"])
            return job["status"] not in ("queued", "running")

        self.wait(finished, 4 * 3600, f"job {where}", every_s=2.0)
        if job["status"] != "succeeded" or not job.get("version"):
            raise SystemExit(f"{self.name} {label}: job {job['status']}: {job['error']}\n"
                             + self.log_tail())
        return job

    def activate(self, version: str) -> None:
        self.post(f"/v1/adapters/{version}/activate")

    def accuracy(self, qs: list[Question], route: str, adapter: str | None,
                 concurrency: int) -> float | None:
        """Share of ``qs`` answered right over POST /v1/ask (``adapter`` None: the base)."""
        from kinject.finetune.evaluate import exact_match

        if not qs:
            return None

        def one(q: Question) -> bool:
            r = self.http.post("/v1/ask", json={"question": q.text, "route": route,
                                                "adapter": adapter or "base"})
            if r.status_code != 200:
                raise SystemExit(f"{self.name}: /v1/ask -> {r.status_code} {r.text[:300]}")
            body = r.json()
            text = "" if body["abstained"] else body["text"].split("[")[0]
            right = exact_match(text, q.answer, max_extra_words=16)
            ANSWERS.append({"arm": self.name, "route": route, "adapter": adapter or "base",
                            "source_id": q.source_id, "lang": q.lang, "kind": q.kind,
                            "question": q.text, "want": q.answer, "got": text.strip(),
                            "right": int(right)})
            return right

        with ThreadPoolExecutor(concurrency) as pool:
            right = list(pool.map(one, qs))
        return sum(right) / len(right)


# Every answer the bench asked for, one row each (written to <out>/inject_answers.csv): which
# questions an adapter got right, by language and kind of fact (the chance bar of the
# delete compares people of the same language mix).
ANSWERS: list[dict[str, Any]] = []


def _matched_chance(data: Data, version: str) -> float | None:
    """The unseen people's closed-book accuracy per language, weighted by the deleted people's
    language mix (a Chinese fact and an English one are not equally easy to guess)."""
    unseen = {p.source_id for p in data.unseen}
    rows = [a for a in ANSWERS if a["adapter"] == version and a["source_id"] in unseen]
    deleted = data.q_deleted
    bar = 0.0
    for lang in {q.lang for q in deleted}:
        mine = [a["right"] for a in rows if a["lang"] == lang]
        if not mine:
            return None
        bar += sum(mine) / len(mine) * sum(q.lang == lang for q in deleted) / len(deleted)
    return round(bar, 4)


def _private(data: Data, version: str, qs: list[Question]) -> tuple[float | None, int]:
    """Accuracy of ``version`` on the questions of ``qs`` whose answer no person it was
    trained on (batch 1 less the deleted, batch 2) holds for that kind of fact, and how many
    there are: the part of the delete's chance bar that guessing from the others cannot reach."""
    from inject_questions import KINDS

    trained = [p for p in data.batch1 + data.batch2 if p.source_id not in data.deleted]
    held = {(KINDS[k].key["en"], v) for p in trained for k, v in p.facts}
    mine = {q.text for q in qs if (q.kind, q.answer) not in held}
    right = [a["right"] for a in ANSWERS if a["adapter"] == version and a["question"] in mine]
    return (round(sum(right) / len(right), 4) if right else None), len(mine)


def _corpus_caught_up(status: dict[str, Any], sources: int) -> bool:
    corpus, lag = status.get("corpus"), status.get("corpus_lag")
    return bool(corpus) and corpus["sources"] == sources and lag is not None \
        and sum(lag.values()) == 0


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Data:
    batch1: list[Person]
    batch2: list[Person]
    unseen: list[Person]
    deleted: list[str]
    q1: list[Question]
    q2: list[Question]
    q_unseen: list[Question]

    @property
    def q_deleted(self) -> list[Question]:
        return [q for q in self.q1 if q.source_id in self.deleted]


@dataclass
class Arm:
    name: str
    env: dict[str, str]
    cycles: int
    measured: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)


def _cycle_row(arm: str, n: int, job: dict[str, Any], publish_t: float | None,
               done_t: float, activated: bool) -> dict[str, Any]:
    report = job.get("report") or {}
    cand, base = report.get("candidate") or {}, report.get("baseline") or {}
    metrics = job.get("metrics") or {}
    before, after = base.get("general_ppl"), cand.get("general_ppl")
    decided = None if publish_t is None else done_t - publish_t
    return {
        "arm": arm, "cycle": n, "version": job.get("version"),
        "outcome": job.get("outcome"), "activated_for_measurement": activated,
        "reasons": list(report.get("reasons") or []),
        "gate_new_accuracy": cand.get("new_accuracy"),
        "gate_new_accuracy_baseline": base.get("new_accuracy"),
        "gate_retention": cand.get("retention_accuracy"),
        "gate_retention_baseline": base.get("retention_accuracy"),
        "gate_questions_new": cand.get("n_new"),
        "gate_questions_retention": cand.get("n_retention"),
        "general_ppl_baseline": before, "general_ppl": after,
        "general_ppl_ratio": after / before if before and after else None,
        "general_texts": cand.get("n_general"),
        "reference_version": report.get("reference_version"),
        "train_examples": job.get("train_examples"),
        "train_seconds": metrics.get("seconds"), "tokens_per_s": metrics.get("tokens_per_s"),
        "step_time_s": metrics.get("step_time_s"),
        "job_seconds": (job["finished_at"] - job["started_at"]
                        if job.get("finished_at") and job.get("started_at") else None),
        "publish_to_decided_s": decided,
        "publish_to_promoted_s": decided if job.get("outcome") == "promoted" else None,
    }


def run_arm(arm: Arm, data: Data, work: Path, key: str, args: argparse.Namespace,
            rows: list[dict[str, Any]]) -> None:
    """One server: publish, cycle, measure; ``arm.measured`` gets the accuracies."""
    progress(f"arm {arm.name}: starting kinject serve ({arm.cycles} cycle(s))")
    server = Server(arm.name, work / arm.name, arm.env, key, args.threads)
    m, c = arm.measured, args.concurrency
    try:
        progress(f"{arm.name}: serving on {server.url}")
        main = arm.name == "ewc"
        if main:  # the base model, closed book (--quick: batch 1 only; it rambles slowly)
            m["base_closed"] = server.accuracy(data.q1, "adapter", None, c)
            if not args.quick:
                m["new_before_cycle2"] = server.accuracy(data.q2, "adapter", None, c)
                m["unseen_base_closed"] = server.accuracy(data.q_unseen, "adapter", None, c)
            progress(f"{arm.name}: base model closed book on batch 1: {m['base_closed']}")
        versions: list[str] = []
        for n, batch in ((1, data.batch1), (2, data.batch2)):
            if n > arm.cycles:
                break
            sources = len(data.batch1) + (len(data.batch2) if n == 2 else 0)
            t_pub = time.perf_counter()
            waits = server.publish(batch, sources)
            progress(f"{arm.name}: batch {n} searchable in {waits['searchable_s']:.1f}s, in "
                     f"the corpus in {waits['corpus_s']:.1f}s")
            m[f"batch{n}_searchable_s"], m[f"batch{n}_in_corpus_s"] = (
                waits["searchable_s"], waits["corpus_s"])
            job = server.cycle(f"cycle {n}")
            done = time.perf_counter()
            activated = job["outcome"] == "rejected"
            if activated:
                server.activate(job["version"])
            versions.append(job["version"])
            rows.append(_cycle_row(arm.name, n, job, t_pub, done, activated))
            progress(f"{arm.name}: cycle {n} {job['outcome']}: "
                     f"{'; '.join(rows[-1]['reasons'])}")
            m[f"batch1_after_cycle{n}"] = server.accuracy(data.q1, "adapter", job["version"], c)
            if n == 2:
                m["new_after_cycle2"] = server.accuracy(data.q2, "adapter", job["version"], c)
            if main and n == 1:  # after the cycle: publish-to-promoted is the road's alone
                m["rag"] = server.accuracy(data.q1, "rag", None, c)
            if main and not (args.quick and n == 1):  # RAG read with the new adapter
                qs = data.q1 if n == 1 else data.q2
                m[f"rag_with_cycle{n}"] = server.accuracy(qs, "rag", job["version"], c)
            progress(f"{arm.name}: after cycle {n}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)
                and not k.endswith("_s")))
        if main and arm.cycles >= 3:
            # what the serving adapter (cycle 2's) knows of the people about to be deleted
            m["deleted_fact_before"] = server.accuracy(data.q_deleted, "adapter",
                                                       server.get("/v1/adapters")["active"], c)
            total = len(data.batch1) + len(data.batch2) - len(data.deleted)
            progress(f"{arm.name}: deleting {len(data.deleted)} of batch 1 over HTTP")
            server.delete(data.deleted, total)

            def fell_back() -> bool:  # every version trained on them is tainted, none serves
                listed = server.get("/v1/adapters")
                status = {a["version"]: a["status"] for a in listed["adapters"]}
                return "tainted" in status.values() and (
                    listed["active"] is None or status.get(listed["active"]) != "tainted")

            server.wait(fell_back, 300, "the delete to taint the adapters trained on them")
            adapters = server.get("/v1/adapters")
            m["tainted_after_delete"] = sum(a["status"] == "tainted"
                                            for a in adapters["adapters"])
            m["serving_after_delete"] = adapters["active"]
            m["deleted_fact_rag"] = server.accuracy(data.q_deleted, "rag", None, c)
            job = server.cycle("cycle 3 (after the delete)")
            done = time.perf_counter()
            activated = job["outcome"] == "rejected"
            if activated:
                server.activate(job["version"])
            rows.append(_cycle_row(arm.name, 3, job, None, done, activated))
            progress(f"{arm.name}: cycle 3 {job['outcome']}: {'; '.join(rows[-1]['reasons'])}")
            v3 = job["version"]
            m["deleted_fact_closed"] = server.accuracy(data.q_deleted, "adapter", v3, c)
            if not args.quick:
                m["deleted_fact_base_closed"] = server.accuracy(data.q_deleted, "adapter",
                                                                None, c)
            m["unseen_people_closed"] = server.accuracy(data.q_unseen, "adapter", v3, c)
            m["unseen_people_closed_matched"] = _matched_chance(data, v3)
            # a fact is guessable when a person still trained on holds the same value;
            # the others can come only from what the delete was to take out
            for name, qs in (("deleted", data.q_deleted), ("unseen", data.q_unseen)):
                m[f"{name}_private_closed"], m[f"{name}_private_questions"] = _private(
                    data, v3, qs)
            if not args.quick:
                kept = [q for q in data.q1 if q.source_id not in data.deleted]
                m["batch1_kept_after_cycle3"] = server.accuracy(kept, "adapter", v3, c)
            m["cycle3_parent"] = job.get("parent")
    finally:
        server.stop()


def _env(args: argparse.Namespace, generator: Path) -> dict[str, str]:
    """The settings every arm shares (the departures from a user's defaults are named in the
    module docstring)."""
    env = {
        "KINJECT_MODELS__GENERATOR": str(generator),
        "KINJECT_FINETUNE__LORA_TARGETS": '["all-linear"]',
        "KINJECT_FINETUNE__EVAL_EVERY": "0",
        "KINJECT_FINETUNE__CHECKPOINT_EVERY": "0",
        "KINJECT_FINETUNE__SEED": str(args.seed),
        "KINJECT_INGEST__OCR_ENGINE": "none",
    }
    epochs = args.epochs or (1 if args.quick else None)
    if epochs:
        env["KINJECT_FINETUNE__EPOCHS"] = str(epochs)
    lr = args.lr or (2e-3 if args.quick else None)
    if lr:
        env["KINJECT_FINETUNE__LR"] = str(lr)
    if args.quick:
        env.update({"KINJECT_FINETUNE__FISHER_SAMPLES": "16",
                    "KINJECT_GATE__GENERAL_TEXTS": "10",
                    "KINJECT_GATE__MAX_QUESTIONS": "40"})
    return env


DISTILL = {"KINJECT_FINETUNE__DISTILL_TEACHER": "previous",
           "KINJECT_FINETUNE__DISTILL_ON": "general+replay"}
ARM_ENV = {
    "ewc": {},
    "plain": {"KINJECT_FINETUNE__EWC_LAMBDA": "0", "KINJECT_FINETUNE__REPLAY_RATIO": "0",
              "KINJECT_FINETUNE__GENERAL_RATIO": "0", "KINJECT_FINETUNE__KL_WEIGHT": "0",
              "KINJECT_FINETUNE__FISHER_SAMPLES": "0"},
    "nokl": {"KINJECT_FINETUNE__KL_WEIGHT": "0"},
    # retention options: EWC alone, distillation alone, both; and a data mix
    "ewc_only": {"KINJECT_FINETUNE__KL_WEIGHT": "0"},
    "distill_only": {"KINJECT_FINETUNE__EWC_LAMBDA": "0", "KINJECT_FINETUNE__FISHER_SAMPLES": "0",
                     **DISTILL},
    "both": DISTILL,
    "mix721": {"KINJECT_FINETUNE__DATA_MIX": "7:2:1"},
    # the ewc settings with as many earlier-cycle examples replayed as new ones (0.25 by default)
    "replay1": {"KINJECT_FINETUNE__REPLAY_RATIO": "1"},
}
# ewc: two batches and the delete; plain: the two batches (forgetting); nokl: the first cycle,
# whose drift from the base model is what the KL term is there to hold
ARM_CYCLES = {"ewc": 3, "plain": 2, "nokl": 1, "ewc_only": 2, "distill_only": 2, "both": 2,
              "mix721": 2, "replay1": 2}


def _ewc_overhead(base_dir: Path, repeats: int, seed: int) -> dict[str, float]:
    """In process, the trainer alone (not the road): optimizer-step time with the EWC
    penalty / without, on the same model and batch, the two kinds of step interleaved
    (A B B A ...) so load that comes and goes on a shared machine falls on both alike. The
    penalty's cost depends on the adapter's size, not on the Fisher's values, so a random
    Fisher anchored near the weights serves."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kinject.config import load_settings
    from kinject.finetune.ewc import EwcPenalty, EwcState, param_key
    from kinject.finetune.trainer import TrainConfig

    config = TrainConfig.from_settings(load_settings().finetune)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    live = {param_key(n): p for n, p in model.named_parameters() if p.requires_grad}
    state = EwcState({k: torch.rand_like(p) for k, p in live.items()},
                     {k: p.detach().clone() + 1e-3 for k, p in live.items()})
    penalty = EwcPenalty(state, model.named_parameters(), max(config.ewc_lambda, 1.0))
    optimizer = torch.optim.AdamW([p for p in live.values()], lr=1e-5)
    ids = torch.randint(0, base.config.vocab_size, (config.batch_size, 64))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def step(with_ewc: bool) -> float:
        t0 = time.perf_counter()
        loss = model(**batch).loss
        if with_ewc:
            loss = loss + penalty()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(False), step(True)  # warm-up
    plain, ewc = [], []
    for i in range(repeats):
        for with_ewc in ((False, True) if i % 2 == 0 else (True, False)):
            (ewc if with_ewc else plain).append(step(with_ewc))
    return {"ewc_step_s": median(ewc), "plain_step_s": median(plain),
            "ewc_step_overhead": median(ewc) / median(plain),
            "ewc_adapter_params": float(sum(p.numel() for p in live.values()))}


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b else None


def _diff(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, float) and isinstance(b, float) else None


def main() -> None:
    started = time.perf_counter()
    # A SIGTERM (a CI runner's timeout, a kill) unwinds like Ctrl-C, so the arm's server (its
    # own session: the signal does not reach it) is stopped and nothing is left running.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    args = parse_args(__doc__ or "", extra=_extra, repeats=(1, 1))
    n = args.people or (2 if args.quick else 8)
    default = "ewc,plain" if args.quick else ",".join(DEFAULT_ARMS)
    arms = [a.strip() for a in (args.arms or default).split(",") if a.strip()]
    unknown = set(arms) - set(ARMS)
    if unknown or not arms:
        raise SystemExit(f"--arms: unknown {sorted(unknown)}; choose from {ARMS}")
    rng = random.Random(args.seed)
    taken: set[str] = set()
    batch1 = people(n, rng, taken, "people/b1")
    batch2 = people(n, rng, taken, "people/b2")
    unseen = people(args.unseen or max(1, n // 2), rng, taken, "people/unseen")
    # a quarter of batch 1 is deleted before cycle 3 (at least one person; with 8, one
    # English and one Chinese); --delete takes more, so the comparison with the unseen
    # people rests on more than 8 questions
    n_deleted = args.delete or max(1, n // 4)
    if not 1 <= n_deleted < n:
        raise SystemExit(f"--delete {n_deleted}: choose 1 to {n - 1} (batch 1 has {n})")
    deleted = [p.source_id for p in batch1[:n_deleted]]
    qrng = random.Random(f"{args.seed}-questions")
    data = Data(batch1, batch2, unseen, deleted, questions(batch1, qrng),
                questions(batch2, qrng), questions(unseen, qrng))
    leaked = leaks(data.q1 + data.q2 + data.q_unseen, batch1 + batch2 + unseen)
    if leaked:
        raise SystemExit(f"bench questions occur in the training corpus: {leaked[:5]}")
    progress(f"{n} people a batch, {len(data.q1)} + {len(data.q2)} questions (none in the "
             f"corpus builder's output), arms {', '.join(arms)}")

    from kinject.models import ensure_converted, resolve_generator

    # The base model as a transformers folder, converted once and shared by every server.
    cache = Path(tempfile.gettempdir()) / "kinject-bench-models"
    source = resolve_generator(args.generator)
    generator = Path(ensure_converted(source, cache) or source.location)
    work = Path(tempfile.mkdtemp(prefix="kinject-inject-"))
    key = "bench-" + secrets.token_urlsafe(16)
    env = _env(args, generator)
    progress(f"work in {work}; shared settings: {env}")
    rows: list[dict[str, Any]] = []
    done: dict[str, Arm] = {}
    keep_logs = False
    try:
        for name in arms:
            arm = Arm(name, {**env, **ARM_ENV[name]}, cycles=ARM_CYCLES[name])
            run_arm(arm, data, work, key, args, rows)
            done[name] = arm
    except BaseException:
        keep_logs = True
        progress(f"failed: the servers' logs stay in {work}")
        raise
    finally:
        if not keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    micro: dict[str, float] = {}
    if args.microbench if args.microbench is not None else not args.quick:
        progress("trainer micro-benchmark (in process): EWC step overhead")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        micro = _ewc_overhead(generator, 4 if args.quick else 10, args.seed)

    result = _result(args, n, arms, data, done, rows, micro)
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_at_end"] = list(os.getloadavg())
    out = args.out or Path(__file__).parent / "out"
    _plot(out / "inject.png", result)
    if ANSWERS:
        import csv

        out.mkdir(parents=True, exist_ok=True)
        with (out / "inject_answers.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(ANSWERS[0]))
            writer.writeheader()
            writer.writerows(ANSWERS)
    emit(result)


def _result(args: argparse.Namespace, n: int, arms: list[str], data: Data,
            done: dict[str, Arm], rows: list[dict[str, Any]], micro: dict[str, float]
            ) -> dict[str, Any]:
    e = done["ewc"].measured if "ewc" in done else {}
    p = done["plain"].measured if "plain" in done else {}
    k = done["nokl"].measured if "nokl" in done else {}

    def gate(arm: str) -> dict[str, Any]:
        return {f"cycle{r['cycle']}": r["outcome"] for r in rows if r["arm"] == arm}

    def ppl(arm: str) -> list[float | None]:
        mine = [r for r in rows if r["arm"] == arm]
        return ([mine[0]["general_ppl_baseline"]] if mine else []) + [
            r["general_ppl"] for r in mine]

    def first(arm: str, key: str) -> Any:
        return next((r[key] for r in rows if r["arm"] == arm and r["cycle"] == 1), None)

    forget_ewc = _diff(e.get("batch1_after_cycle1"), e.get("batch1_after_cycle2"))
    forget_plain = _diff(p.get("batch1_after_cycle1"), p.get("batch1_after_cycle2"))
    promoted = [r["publish_to_promoted_s"] for r in rows
                if r["arm"] == "ewc" and r["publish_to_promoted_s"] is not None]
    result: dict[str, Any] = {
        "bench": "inject",
        "road": "kinject serve subprocesses; POST /v1/records, /v1/finetune/jobs, /v1/ask",
        "quick": bool(args.quick),
        "arms": arms,
        "people_per_batch": n,
        "kinds_of_facts": len(data.q1) // max(1, n),
        "questions_batch1": len(data.q1), "questions_batch2": len(data.q2),
        "questions_zh_share": sum(q.lang == "zh" for q in data.q1 + data.q2)
        / max(1, len(data.q1) + len(data.q2)),
        "base_closed": e.get("base_closed"),
        "rag": e.get("rag"),
        "lora_closed": e.get("batch1_after_cycle1"),
        "lora_rag": e.get("rag_with_cycle1"),
        "closed_over_rag": _ratio(e.get("batch1_after_cycle1"), e.get("rag")),
        "batch1_after_cycle2_ewc_replay": e.get("batch1_after_cycle2"),
        "forget_ewc_replay": forget_ewc,
        "new_before_cycle2": e.get("new_before_cycle2"),
        "new_after_cycle2": e.get("new_after_cycle2"),
        "rag_new_after_cycle2": e.get("rag_with_cycle2"),
        "lora_closed_plain": p.get("batch1_after_cycle1"),
        "batch1_after_cycle2_plain": p.get("batch1_after_cycle2"),
        "forget_plain": forget_plain,
        "new_after_cycle2_plain": p.get("new_after_cycle2"),
        # the peer in the same run: forgetting (lower is better) and new knowledge, EWC +
        # replay + KL over plain LoRA
        "vs_plain": {
            # only where plain LoRA forgot at all (a ratio of two gains means nothing)
            "forget_ratio": (_ratio(forget_ewc, forget_plain)
                             if isinstance(forget_plain, float) and forget_plain > 0 else None),
            "retention_ratio": _ratio(e.get("batch1_after_cycle2"),
                                      p.get("batch1_after_cycle2")),
            "new_knowledge_ratio": _ratio(e.get("new_after_cycle2"), p.get("new_after_cycle2")),
        },
        # the KL term against its absence, on cycle 1 (from the base model): general-text
        # perplexity over the base's, and what the gate decided
        "kl_vs_nokl": {
            "ppl_ratio_cycle1_kl": first("ewc", "general_ppl_ratio"),
            "ppl_ratio_cycle1_nokl": first("nokl", "general_ppl_ratio"),
            "gate_cycle1_kl": first("ewc", "outcome"),
            "gate_cycle1_nokl": first("nokl", "outcome"),
            "lora_closed_kl": e.get("batch1_after_cycle1"),
            "lora_closed_nokl": k.get("batch1_after_cycle1"),
        } if k else None,
        # per arm over cycles 1 and 2: forgetting (batch 1's drop, lower is better), new
        # knowledge (batch 2 after cycle 2), general-text perplexity after cycle 2 over the
        # base's, median optimizer-step seconds
        "retention_arms": {arm: _retention(arm, done[arm].measured, rows)
                           for arm in arms if ARM_CYCLES[arm] >= 2 and arm in done},
        "general_ppl_per_cycle": {arm: ppl(arm) for arm in arms},
        "gate": {arm: gate(arm) for arm in arms},
        "publish_to_promoted_s": median(promoted) if promoted else None,
        "batch1_searchable_s": e.get("batch1_searchable_s"),
        "batch1_in_corpus_s": e.get("batch1_in_corpus_s"),
        "deleted_people": len(data.deleted),
        "deleted_questions": len(data.q_deleted),
        "deleted_fact_before": e.get("deleted_fact_before"),
        "deleted_fact_closed": e.get("deleted_fact_closed"),
        "deleted_fact_base_closed": e.get("deleted_fact_base_closed"),
        "deleted_fact_rag": e.get("deleted_fact_rag"),
        "unseen_people_closed": e.get("unseen_people_closed"),
        "unseen_people_closed_matched": e.get("unseen_people_closed_matched"),
        "deleted_private_closed": e.get("deleted_private_closed"),
        "deleted_private_questions": e.get("deleted_private_questions"),
        "unseen_private_closed": e.get("unseen_private_closed"),
        "unseen_private_questions": e.get("unseen_private_questions"),
        "unseen_people_base_closed": e.get("unseen_base_closed"),
        "unseen_questions": len(data.q_unseen),
        "batch1_kept_after_cycle3": e.get("batch1_kept_after_cycle3"),
        "tainted_after_delete": e.get("tainted_after_delete"),
        "serving_after_delete": e.get("serving_after_delete"),
        "cycle3_parent": e.get("cycle3_parent"),
        "cycle_seconds": median([r["job_seconds"] for r in rows if r["job_seconds"]] or [0.0]),
        "train_seconds": median([r["train_seconds"] for r in rows if r["train_seconds"]]
                                or [0.0]),
        "tokens_per_s": median([r["tokens_per_s"] for r in rows if r["tokens_per_s"]] or [0.0]),
        "cycles": rows,
        "trainer_microbench": micro or None,
        "env": environment(),
    }
    return _clean(result)


def _retention(arm: str, m: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [r for r in rows if r["arm"] == arm and r["cycle"] in (1, 2)]
    base_ppl = mine[0]["general_ppl_baseline"] if mine else None
    ppl2 = next((r["general_ppl"] for r in mine if r["cycle"] == 2), None)
    steps = [r["step_time_s"] for r in mine if r["step_time_s"]]
    return {"batch1_after_cycle1": m.get("batch1_after_cycle1"),
            "batch1_after_cycle2": m.get("batch1_after_cycle2"),
            "forget": _diff(m.get("batch1_after_cycle1"), m.get("batch1_after_cycle2")),
            "new_after_cycle2": m.get("new_after_cycle2"),
            "general_ppl_cycle2": ppl2,
            "general_ppl_ratio_to_base": _ratio(ppl2, base_ppl),
            "step_time_s": median(steps) if steps else None,
            "gate": {f"cycle{r['cycle']}": r["outcome"] for r in mine}}


def _clean(v: Any) -> Any:
    """JSON has no NaN (a measure with nothing to measure is null); floats to 4 places."""
    if isinstance(v, float):
        return None if v != v else round(v, 4)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _plot(path: Path, r: dict[str, Any]) -> None:
    """Left: accuracy per cycle (the new batch closed book and by RAG, batch 1's retention
    per arm, deleted vs never-seen people after cycle 3). Right: general-text perplexity per
    cycle and arm."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        progress(f"matplotlib is not installed: no plot {path.name} "
                 "(pip install 'kinject[bench]')")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pts(*pairs: tuple[int, Any]) -> tuple[list[int], list[float]]:
        kept = [(x, y) for x, y in pairs if isinstance(y, int | float)]
        return [x for x, _ in kept], [y for _, y in kept]

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.4),
                                 gridspec_kw={"width_ratios": [1.4, 1]})
    ax.plot(*pts((0, r["base_closed"]), (1, r["lora_closed"]), (2, r["new_after_cycle2"])),
            marker="o", label="new batch, closed book")
    ax.plot(*pts((0, r["rag"]), (1, r["lora_rag"]), (2, r["rag_new_after_cycle2"])),
            marker="s", label="new batch, RAG (+ adapter)")
    ax.plot(*pts((1, r["lora_closed"]), (2, r["batch1_after_cycle2_ewc_replay"])),
            marker="^", label="batch 1, EWC + replay + KL")
    ax.plot(*pts((1, r["lora_closed_plain"]), (2, r["batch1_after_cycle2_plain"])),
            marker="v", linestyle="--", label="batch 1, plain LoRA")
    if r.get("deleted_fact_closed") is not None:
        ax.plot([3], [r["deleted_fact_closed"]], marker="X", markersize=9, linestyle="none",
                color="tab:purple", label="deleted people, closed book")
        if r.get("unseen_people_closed") is not None:
            ax.plot([3], [r["unseen_people_closed"]], marker="P", markersize=9,
                    linestyle="none", color="tab:gray", label="people never seen, closed book")
        if r.get("deleted_fact_rag") is not None:
            ax.plot([3], [r["deleted_fact_rag"]], marker="D", linestyle="none",
                    color="tab:brown", label="deleted people, RAG")
    ticks = ["base", "cycle 1", "cycle 2", "cycle 3\n(after delete)"]
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_ylabel("exact match (questions phrased apart from training)")
    ax.set_ylim(-0.02, 1.04)
    ax.set_title(f"knowledge injection over HTTP, {r['people_per_batch']} people a batch"
                 f"{' (quick)' if r['quick'] else ''}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    for arm, series in (r.get("general_ppl_per_cycle") or {}).items():
        x, y = pts(*enumerate(series))
        if y:
            bx.plot(x, y, marker="o", label=arm)
    for arm, decisions in (r.get("gate") or {}).items():
        for cyc, outcome in decisions.items():
            row = next((c for c in r["cycles"] if c["arm"] == arm
                        and f"cycle{c['cycle']}" == cyc), None)
            if row and row["general_ppl"] is not None and outcome == "rejected":
                bx.annotate("rejected", (row["cycle"], row["general_ppl"]), fontsize=6)
    bx.set_xticks(range(len(ticks)), ["base", "c1", "c2", "c3"])
    bx.set_ylabel("general-text perplexity (gate's held-out sample)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    progress(f"wrote {path}")


if __name__ == "__main__":
    main()
