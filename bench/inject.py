"""Knowledge injection: what LoRA cycles put into the weights, what they forget, what a
delete takes out, against retrieval (RAG) on the same facts.

Invented people (name, birth year, city, university, employer, field; English and Chinese)
arrive in two batches as structured rows. Each batch goes into kinject's corpus (augmented
examples) and its index; ``kinject.finetune.jobs.run_cycle`` trains a cycle (LoRA + online
EWC + replay, the registry and the gate), and the questions asked are the corpus's held-out
phrasings, never a training form. Reported (exact match, normalised):

- ``base_closed``, ``rag``, ``lora_closed``, ``lora_rag``: batch 1 after cycle 1;
- ``forget_ewc_replay``, ``forget_plain``: the drop of batch-1 accuracy after cycle 2, with
  EWC + replay and with plain LoRA (the same cycle 1, then cycle 2 without either);
- ``new_after_cycle2``: batch-2 accuracy after cycle 2 (EWC + replay);
- ``ewc_step_overhead``: median optimizer-step time with the EWC penalty / without, steps
  interleaved on one model and batch (``cycle_step_ratio_ewc_replay_vs_plain``: the two
  cycle-2 runs' own median step times, which also differ in data); ``cycle_seconds``,
  ``tokens_per_s``;
- ``deleted_fact_closed``, ``deleted_fact_rag``: accuracy on deleted people's facts (a fifth
  of batch 1, at least one person) after the next cycle (it trains from the base: every
  earlier adapter held them) and from the index once the delete is applied;
  ``unseen_people_closed``: the same adapter on people it never saw (the chance bar: the
  bench draws cities and employers from short lists, so a trained adapter guesses some right
  about anyone);
- ``per_cycle``: per cycle (base, 1, 2) the new batch's closed-book and RAG accuracy and batch
  1's retention, also drawn in ``<out>/inject.png`` (``--out``, default ``bench/out``; needs
  matplotlib, the ``bench`` extra: without it the plot is skipped with a note).

Training uses the settings a user gets by default (``FinetuneSettings``), with two
departures a user makes by setting them: LoRA on every linear layer
(``KINJECT_FINETUNE__LORA_TARGETS='["all-linear"]'``: about 3x more knowledge per minute than
the default q_proj, v_proj on SmolLM2, ENVIRONMENT.md) and, for ``--quick``'s few steps,
a higher learning rate. Checkpoints and held-out evaluations are off (each cycle
trains every epoch; the gate still asks its questions).

The bench activates each cycle's candidate whatever the gate decides, so forgetting can be
measured; the gate's decisions are reported beside (``gate``). The records go straight into
the corpus and the index here (the Kafka road to both is covered by the tests).

    python bench/inject.py --quick     # SmolLM2, 3 people per batch, 3 epochs
    python bench/inject.py             # 20 people per batch, 3 epochs: about 70 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit, environment, median, parse_args, progress

FIRST = ["Aldric", "Brenna", "Cosmo", "Dagny", "Elowen", "Fenwick", "Galen", "Hesper",
         "Isolde", "Jory", "Kestrel", "Lysandra", "Merrick", "Nerys", "Orrin", "Perpetua"]
LAST = ["Ashdown", "Blackwood", "Corrow", "Dunmere", "Everly", "Fallowfield", "Greythorn",
        "Hollis", "Ironside", "Kettering", "Larkspur", "Marchbank", "Northcote", "Quillfeather"]
CITY = ["Port Avalen", "Thistlebury", "Mirecastle", "Oldharbour", "Wrenfield", "Duskmoor",
        "Brackenholt", "Saltmere"]
UNI = ["Avalen University", "Mirecastle College", "the Wrenfield Institute",
       "Duskmoor Polytechnic", "Saltmere Academy"]
ORG = ["Halcyon Instruments", "Verdant Mills", "Copperleaf Press", "Bramble & Sons",
       "the Duskmoor Observatory", "Lantern Rail"]
FIELD = ["marine biology", "medieval history", "quantum chemistry", "urban planning",
         "glass sculpture", "linguistics", "orchard management", "bridge engineering"]
ZH_SURNAME = list("王李张刘陈杨赵黄周吴徐孙")
ZH_GIVEN = ["小明", "雨桐", "子轩", "欣怡", "浩然", "思远", "梓涵", "俊杰"]
ZH_CITY = ["大理", "泉州", "洛阳", "桂林", "喀什", "丽江"]
ZH_UNI = ["青岚大学", "南湖学院", "西岭理工"]
ZH_ORG = ["青岚仪器公司", "翠谷纺织厂", "铜叶出版社", "星河天文台"]
ZH_FIELD = ["海洋生物学", "中世纪历史", "量子化学", "城市规划", "语言学"]


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--people", type=int, default=None, help="people per batch")
    parser.add_argument("--epochs", type=int, default=None, help="default: the setting's")
    parser.add_argument("--lr", type=float, default=None,
                        help="default: the setting's (2e-3 with --quick: few steps)")
    parser.add_argument("--zh-share", type=float, default=0.25)
    parser.add_argument("--generator", default="smollm2", help="base model (default SmolLM2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is faster on a machine busy with others)")


def people(n: int, rng: random.Random, zh_share: float, taken: set[str]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    while len(out) < n:
        if rng.random() < zh_share:
            row = {"name": rng.choice(ZH_SURNAME) + rng.choice(ZH_GIVEN),
                   "出生年份": str(rng.randint(1921, 1999)), "城市": rng.choice(ZH_CITY),
                   "大学": rng.choice(ZH_UNI), "雇主": rng.choice(ZH_ORG),
                   "专业": rng.choice(ZH_FIELD)}
        else:
            row = {"name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                   "birth year": str(rng.randint(1921, 1999)), "city": rng.choice(CITY),
                   "university": rng.choice(UNI), "employer": rng.choice(ORG),
                   "field": rng.choice(FIELD)}
        if row["name"] not in taken:
            taken.add(row["name"])
            out.append(row)
    return out


def chunk_of(row: dict[str, str]) -> Any:
    from kinject.types import Chunk, content_hash

    source_id = f"people/{row['name']}"
    text = "\n".join(f"{k}: {v}" for k, v in row.items())
    lang = "zh" if any("\u4e00" <= c <= "\u9fff" for c in row["name"]) else "en"
    return Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id, source_id=source_id,
                 text=text, lang=lang, kind="csv", meta={"row": dict(row)})


class Lab:
    """One data dir: corpus, index, registry; cycles and measurements over it."""

    def __init__(self, data_dir: Path, generator: str, max_questions: int) -> None:
        from kinject.config import load_settings
        from kinject.finetune.corpus import CorpusStore
        from kinject.finetune.jobs import corpus_path
        from kinject.finetune.registry import AdapterRegistry

        self.settings = load_settings(
            data_dir=data_dir, models={"generator": generator, "device": "auto"},
            gate={"max_questions": max_questions})
        self.corpus = CorpusStore(corpus_path(data_dir))
        self.registry = AdapterRegistry.for_data_dir(data_dir)

    def add(self, chunks: list[Any]) -> None:
        for c in chunks:
            self.corpus.replace_source(c.source_id, [c])

    def cycle(self, config: Any) -> Any:
        from kinject.finetune.jobs import run_cycle

        result = run_cycle(self.settings, train_config=config,
                           early_stopping=False)
        if result.version and result.status == "rejected" and result.version != (
                self.registry.active()):
            if self.registry.get(result.version).status != "tainted":
                self.registry.activate(result.version, "bench")  # measure it anyway
        return result

    def questions(self, sources: set[str]) -> list[Any]:
        from kinject.finetune.evaluate import EvalQuestion

        return [EvalQuestion(q.question, q.answer, q.source_id, q.cycle)
                for q in self.corpus.qa_pairs() if q.source_id in sources]


def _ewc_overhead(base_dir: Path, config: Any, repeats: int) -> dict[str, float]:
    """Optimizer-step time with the EWC penalty / without, on the same model and batch.

    The two kinds of step alternate (A B B A ...), so load that comes and goes on a shared
    machine falls on both alike; the cycles' own step times differ in data (replay) and in
    when they ran, and compare less fairly. The penalty's cost depends on the adapter's size,
    not on the Fisher's values, so a random Fisher anchored near the weights serves.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kinject.finetune.ewc import EwcPenalty, EwcState, param_key

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=config.target_modules, task_type="CAUSAL_LM"))
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
            "ewc_params": float(sum(p.numel() for p in live.values()))}


def _closed(ev: Any, adapter: str | None, qs: list[Any]) -> float:
    with ev.use(adapter):
        return float(ev.accuracy(qs).accuracy) if qs else float("nan")


def _rag_accuracy(rag: Any, qs: list[Any]) -> float:
    from kinject.finetune.evaluate import exact_match

    if not qs:
        return float("nan")
    hits = 0
    for q in qs:
        answer = rag.ask(q.question)
        text = answer.text.split("[")[0] if not answer.abstained else ""
        hits += exact_match(text, q.answer, max_extra_words=16)
    return hits / len(qs)


def _index_update(index: Any, embedder: Any, chunks: list[Any], delete: str | None = None
                  ) -> None:
    from kinject.index.changes import SourceUpdate

    if delete is not None:
        index.apply([SourceUpdate(op="delete", source_id=delete)])
        return
    index.apply([SourceUpdate(op="upsert", source_id=c.source_id, chunks=(c,),
                              vectors=np.asarray(embedder.encode([c.text]), np.float32),
                              embedder=embedder.name) for c in chunks])


def main() -> None:
    args = parse_args(__doc__ or "", extra=_extra, repeats=(1, 1))
    n = args.people or (3 if args.quick else 20)
    rng = random.Random(args.seed)
    taken: set[str] = set()
    batch1 = [chunk_of(r) for r in people(n, rng, args.zh_share, taken)]
    batch2 = [chunk_of(r) for r in people(n, rng, args.zh_share, taken)]
    unseen = [chunk_of(r) for r in people(max(3, n // 2), rng, args.zh_share, taken)]
    # a fifth of batch 1 is deleted before cycle 3 (at least one person): with one person,
    # deleted_fact_closed rests on 5 questions
    deleted = [c.source_id for c in batch1[:max(1, n // 5)]]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from kinject.config import load_settings
    from kinject.finetune.evaluate import ClosedBookEvaluator
    from kinject.finetune.jobs import base_model_dir
    from kinject.finetune.serving import AdapterSwitcher
    from kinject.finetune.trainer import TrainConfig
    from kinject.index.embedders import load_embedder
    from kinject.index.text_index import TextIndex
    from kinject.models import ensure_converted, load_generator, resolve_generator
    from kinject.rag.service import RagService

    defaults = TrainConfig.from_settings(load_settings().finetune)
    epochs = args.epochs or defaults.epochs
    work = Path(tempfile.mkdtemp(prefix="kinject-inject-"))
    progress(f"{n} people per batch, {epochs} epoch(s), base {args.generator}; work in {work}")
    config = dataclasses.replace(
        defaults, target_modules="all-linear", epochs=epochs,
        lr=args.lr or (2e-3 if args.quick else defaults.lr), eval_every=0, checkpoint_every=0,
        fisher_samples=16 if args.quick else defaults.fisher_samples, seed=args.seed)
    shown = {k: v for k, v in config.to_dict().items() if not k.endswith("_system")}
    progress(f"training config: {shown}")
    plain = dataclasses.replace(config, ewc_lambda=0.0, replay_ratio=0.0, fisher_samples=0)

    max_q = 60 if args.quick else 400
    # The base as a plain transformers folder, converted once into the usual model cache.
    source = resolve_generator(args.generator)
    generator = str(ensure_converted(source, load_settings().models_dir) or source.location)
    lab = Lab(work / "ewc", generator, max_q)
    base_dir = base_model_dir(lab.settings)
    embedder = load_embedder(lab.settings.models.embedder)
    index = TextIndex(work / "index", embedder).open()
    loaded = load_generator(generator, load_settings().models_dir, "auto", "auto")

    lab.add(batch1)
    _index_update(index, embedder, batch1)
    q1 = lab.questions({c.source_id for c in batch1})
    qdel = [q for q in q1 if q.source_id in deleted]
    progress(f"cycle 1 on batch 1 ({len(q1)} held-out questions)")
    c1 = lab.cycle(config)
    v1 = c1.version
    shutil.copytree(work / "ewc", work / "plain")  # the same cycle 1 for the plain run
    lab.add(batch2)
    _index_update(index, embedder, batch2)
    q2 = lab.questions({c.source_id for c in batch2})
    progress("cycle 2 on batch 2 with EWC + replay")
    c2 = lab.cycle(config)
    plain_lab = Lab(work / "plain", generator, max_q)
    plain_lab.add(batch2)
    progress("cycle 2 on batch 2, plain LoRA")
    c2p = plain_lab.cycle(plain)

    progress("scoring closed book and RAG")
    ev = ClosedBookEvaluator(base_dir, device=loaded.device, max_new_tokens=24)
    ev.add_adapter("v1", lab.registry.path(v1))
    ev.add_adapter("v2", lab.registry.path(c2.version))
    ev.add_adapter("v2p", plain_lab.registry.path(c2p.version))
    base_closed = _closed(ev, None, q1)
    base_closed2 = _closed(ev, None, q2)
    lora_closed = _closed(ev, "v1", q1)
    after_ewc = _closed(ev, "v2", q1)
    after_plain = _closed(ev, "v2p", q1)
    new_after = _closed(ev, "v2", q2)
    switcher = AdapterSwitcher(loaded, lab.registry)
    rag = RagService(index, switcher.generator(None))
    lora_rag_svc = RagService(index, switcher.generator(v1))
    rag_acc = _rag_accuracy(rag, q1)
    lora_rag = _rag_accuracy(lora_rag_svc, q1)
    rag_new2 = _rag_accuracy(RagService(index, switcher.generator(c2.version)), q2)

    progress(f"deleting {', '.join(deleted)}; cycle 3 retrains without them")
    lab.registry.taint_sources(deleted)
    for source_id in deleted:
        lab.corpus.remove_source(source_id)
        _index_update(index, embedder, [], delete=source_id)
    c3 = lab.cycle(config)
    ev.add_adapter("v3", lab.registry.path(c3.version))
    deleted_closed = _closed(ev, "v3", qdel)
    deleted_base = _closed(ev, None, qdel)
    deleted_rag = _rag_accuracy(RagService(index, switcher.generator(None)), qdel)
    control = Lab(work / "unseen", generator, max_q)  # only to phrase their questions
    control.add(unseen)
    unseen_closed = _closed(ev, "v3", control.questions({c.source_id for c in unseen}))
    control.corpus.close()

    per_cycle = [
        {"cycle": 0, "adapter": None, "new_closed": base_closed, "new_rag": rag_acc,
         "retention_ewc_replay": None, "retention_plain": None},
        {"cycle": 1, "adapter": v1, "new_closed": lora_closed, "new_rag": lora_rag,
         "retention_ewc_replay": None, "retention_plain": None},
        {"cycle": 2, "adapter": c2.version, "new_closed": new_after, "new_rag": rag_new2,
         "retention_ewc_replay": after_ewc, "retention_plain": after_plain},
    ]
    progress("EWC step overhead: interleaved steps with and without the penalty")
    overhead = _ewc_overhead(base_dir, config, 4 if args.quick else 10)
    step_ewc = c2.metrics.get("step_time_s", float("nan"))
    step_plain = c2p.metrics.get("step_time_s", float("nan"))
    result = {
        "bench": "inject",
        "quick": bool(args.quick),
        "people_per_batch": n,
        "epochs": epochs,
        "questions_batch1": len(q1),
        "base_closed": base_closed,
        "rag": rag_acc,
        "lora_closed": lora_closed,
        "lora_rag": lora_rag,
        "batch1_after_cycle2_ewc_replay": after_ewc,
        "batch1_after_cycle2_plain": after_plain,
        "forget_ewc_replay": lora_closed - after_ewc,
        "forget_plain": lora_closed - after_plain,
        "new_after_cycle2": new_after,
        "new_before_cycle2": base_closed2,
        "rag_new_after_cycle2": rag_new2,
        # interleaved A/B steps on one batch (see _ewc_overhead); the cycles' own ratio beside
        "ewc_step_overhead": overhead["ewc_step_overhead"],
        "ewc_step_s": overhead["ewc_step_s"], "plain_step_s": overhead["plain_step_s"],
        "ewc_adapter_params": overhead["ewc_params"],
        "cycle_step_ratio_ewc_replay_vs_plain": (step_ewc / step_plain if step_plain
                                                 else float("nan")),
        "cycle_seconds": median([c1.seconds, c2.seconds, c2p.seconds, c3.seconds]),
        "train_seconds": median([c.metrics.get("seconds", 0.0) for c in (c1, c2, c2p, c3)]),
        "tokens_per_s": median([c.metrics.get("tokens_per_s", 0.0) for c in (c1, c2, c2p)]),
        "deleted_people": len(deleted),
        "deleted_questions": len(qdel),
        "deleted_fact_closed": deleted_closed,
        "deleted_fact_base_closed": deleted_base,
        "deleted_fact_rag": deleted_rag,
        "unseen_people_closed": unseen_closed,
        "cycle3_parent": c3.parent,
        "gate": {"cycle1": c1.status, "cycle2": c2.status, "cycle2_plain": c2p.status,
                 "cycle3": c3.status},
        # why the gate decided as it did (its own held-out questions, retention, perplexity)
        "gate_reasons": {name: list(r.report.get("reasons", [])) for name, r in
                         (("cycle1", c1), ("cycle2", c2), ("cycle2_plain", c2p),
                          ("cycle3", c3))},
        "per_cycle": [{k: _num(v) for k, v in row.items()} for row in per_cycle],
        "train_config": shown,
        "env": environment(),
    }
    out = args.out or Path(__file__).parent / "out"
    _plot(out / "inject.png", result)
    index.close()
    for lab_ in (lab, plain_lab):
        lab_.corpus.close()
    shutil.rmtree(work, ignore_errors=True)
    # JSON has no NaN: a measure with nothing to measure is null
    emit({k: _num(v) for k, v in result.items()})


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and v != v else round(v, 4) if isinstance(v, float) else v


def _plot(path: Path, r: dict[str, Any]) -> None:
    """Accuracy per cycle: the new batch closed book and by RAG, batch 1's retention."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        progress(f"matplotlib is not installed: no plot {path.name} "
                 "(pip install 'kinject[bench]')")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["per_cycle"]

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(row["cycle"], row[key]) for row in rows
               if row[key] is not None and row[key] == row[key]]
        return [c for c, _ in pts], [v for _, v in pts]

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    ax.plot(*series("new_closed"), marker="o", label="new batch, closed book")
    ax.plot(*series("new_rag"), marker="s", label="new batch, RAG (+ adapter)")
    x, y = series("retention_ewc_replay")
    ax.plot([1, *x], [r["lora_closed"], *y], marker="^", label="batch 1, EWC + replay")
    x, y = series("retention_plain")
    ax.plot([1, *x], [r["lora_closed"], *y], marker="v", linestyle="--",
            label="batch 1, plain LoRA")
    # cycle 3 retrains without the deleted people: their facts beside people never seen
    # (the chance bar) and RAG on them once the delete is applied
    if r.get("deleted_fact_closed") is not None:
        ax.plot([3], [r["deleted_fact_closed"]], marker="X", markersize=9, linestyle="none",
                color="tab:purple", label="deleted people, closed book")
        if r.get("unseen_people_closed") is not None:
            ax.plot([3], [r["unseen_people_closed"]], marker="P", markersize=9,
                    linestyle="none", color="tab:gray", label="people never seen, closed book")
        if r.get("deleted_fact_rag") is not None:
            ax.plot([3], [r["deleted_fact_rag"]], marker="D", linestyle="none",
                    color="tab:brown", label="deleted people, RAG")
        ax.set_xticks([0, 1, 2, 3], ["base", "cycle 1", "cycle 2", "cycle 3\n(after delete)"])
    else:
        ax.set_xticks([0, 1, 2], ["base", "cycle 1", "cycle 2"])
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.04)  # lines at 0 and 1 stay visible
    ax.set_title(f"knowledge injection, {r['people_per_batch']} people per batch, "
                 f"{r['epochs']} epoch(s)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    progress(f"wrote {path}")


if __name__ == "__main__":
    main()
