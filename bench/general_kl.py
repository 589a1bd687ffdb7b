"""General-text drift against new knowledge: one cycle per KL weight, compared.

One batch of invented people (bench/inject_questions.py's generator) goes into a fresh corpus per
``--weights`` value; ``run_cycle`` trains cycle 1 from the base model (the bench's settings:
all-linear LoRA, replay and general text as configured) with ``finetune.kl_weight`` set, and
its gate reports new-knowledge accuracy. Then every adapter and the base model score the
gate's held-out general-text sample paragraph by paragraph, which gives:

- ``ppl`` and ``ratio`` (adapter / base perplexity on the gate's sample, what the gate bounds);
- ``ratio_rel_std`` at smaller sample sizes (random sub-samples of the gate's sample): how
  much of a ratio is the choice of paragraphs;
- ``new_accuracy``: the gate's new-knowledge accuracy (its held-out questions).

    python bench/general_kl.py --people 3 --weights 0,1 --lr 2e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import progress
from inject_questions import Person, people


def chunk_of(person: Person) -> Any:
    """The person's record as the corpus holds a table row (``field: value`` lines)."""
    from kinject.types import Chunk, content_hash

    row = person.record()
    text = "\n".join(f"{k}: {v}" for k, v in row.items())
    return Chunk(chunk_id=content_hash(person.source_id, text), doc_id=person.source_id,
                 source_id=person.source_id, text=text, lang=person.lang, kind="csv",
                 meta={"row": dict(row)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--people", type=int, default=3)
    ap.add_argument("--weights", default="0,1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--general-texts", type=int, default=200)
    ap.add_argument("--general-ratio", type=float, default=None, help="default: the setting's")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/general_kl.json"))
    ap.add_argument("--work", type=Path, default=None,
                    help="a previous run's folder: its cycles are scored, not trained again")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from kinject.config import load_settings
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.evaluate import ClosedBookEvaluator
    from kinject.finetune.general_text import gate_sample
    from kinject.finetune.jobs import corpus_path, run_cycle
    from kinject.finetune.registry import AdapterRegistry
    from kinject.finetune.trainer import TrainConfig
    from kinject.models import ensure_converted, resolve_generator

    rng = random.Random(args.seed)
    batch = [chunk_of(p) for p in people(args.people, rng, set(), "people/kl")]
    models_dir = load_settings().models_dir
    base_dir = ensure_converted(resolve_generator("smollm2"), models_dir)
    work = args.work or Path(tempfile.mkdtemp(prefix="kinject-general-kl-"))
    report: dict[str, Any] = {"people": args.people, "epochs": args.epochs, "lr": args.lr,
                              "general_ratio": args.general_ratio,
                              "general_texts": args.general_texts, "runs": []}
    adapters: dict[float, Path] = {}
    for weight in (float(w) for w in args.weights.split(",")):
        # the gate's own perplexity is left out here (1 paragraph): it is measured below,
        # paragraph by paragraph, for every adapter on one evaluator
        settings = load_settings(data_dir=work / f"kl{weight}",
                                 models={"generator": str(base_dir), "device": "auto"},
                                 gate={"max_questions": 60, "general_texts": 1})
        registry = AdapterRegistry.for_data_dir(settings.data_dir)
        t0 = time.perf_counter()
        done = registry.versions()
        if done:  # --work: trained before
            version, gate = done[-1].version, done[-1].report
        else:
            with CorpusStore(corpus_path(settings.data_dir)) as corpus:
                corpus.add_chunks(batch)
            config = dataclasses.replace(
                TrainConfig.from_settings(settings.finetune), target_modules="all-linear",
                epochs=args.epochs, lr=args.lr, eval_every=0, checkpoint_every=0,
                fisher_samples=0, seed=args.seed, kl_weight=weight)
            if args.general_ratio is not None:
                config = dataclasses.replace(config, general_ratio=args.general_ratio)
            progress(f"cycle 1 with kl_weight {weight}")
            result = run_cycle(settings, train_config=config,
                               early_stopping=False)
            version, gate = result.version or "", result.report
        adapters[weight] = registry.path(version)
        report["runs"].append({"kl_weight": weight, "seconds": time.perf_counter() - t0,
                               "new_accuracy": gate["candidate"]["new_accuracy"],
                               "base_new_accuracy": gate["baseline"]["new_accuracy"],
                               "new_nll": gate["candidate"]["new_nll"],
                               "n_new": gate["candidate"]["n_new"]})
    progress(f"scoring {args.general_texts} held-out paragraphs per model")
    sample = gate_sample(args.general_texts)
    ev = ClosedBookEvaluator(base_dir)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    base = ev.text_nll(sample)
    report["seconds_per_paragraph"] = (time.perf_counter() - t0) / len(sample)
    report["base_ppl"] = _ppl(base, range(len(sample)))
    sub_rng = random.Random("sub")
    for i, run in enumerate(report["runs"]):
        name = f"run{i}"  # a PEFT adapter name: no dots
        ev.add_adapter(name, adapters[run["kl_weight"]])
        with ev.use(name):
            parts = ev.text_nll(sample)
        run["ppl"] = _ppl(parts, range(len(sample)))
        run["ratio"] = run["ppl"] / report["base_ppl"]
        zh = [i for i, t in enumerate(sample) if any("\u4e00" <= c <= "\u9fff" for c in t)]
        en = [i for i in range(len(sample)) if i not in set(zh)]
        run["ratio_en"] = _ppl(parts, en) / _ppl(base, en)
        run["ratio_zh"] = _ppl(parts, zh) / _ppl(base, zh) if zh else math.nan
        run["ratio_rel_std"] = {}
        for size in (10, 25, 50, 100):
            if size >= len(sample):
                continue
            ratios = []
            for _ in range(2000):
                pick = sub_rng.sample(en, size // 2) + sub_rng.sample(zh, size // 2)
                ratios.append(_ppl(parts, pick) / _ppl(base, pick))
            run["ratio_rel_std"][size] = statistics.pstdev(ratios) / statistics.fmean(ratios)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))


def _ppl(parts: list[tuple[float, int]], idx: Any) -> float:
    idx = list(idx)
    return math.exp(sum(parts[i][0] for i in idx) / sum(parts[i][1] for i in idx))


if __name__ == "__main__":
    main()
