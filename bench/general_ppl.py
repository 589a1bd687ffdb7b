"""How noisy is the gate's general-text perplexity, and how long does it take?

Scores every held-out paragraph of the general-text corpus once with the base model (and,
with ``--adapter``, with that adapter), then draws ``--draws`` random samples of each size
from those per-paragraph scores:

- ``base_ppl``: mean and relative std of the base model's perplexity across samples: how far
  the measure moves when only the choice of paragraphs changes;
- ``ratio`` (with ``--adapter``): adapter perplexity / base perplexity on the same sample,
  what the gate bounds (``gate.max_ppl_increase``), and its relative std across samples;
- ``seconds_per_paragraph``: the time the gate spends per paragraph and model.

    python bench/general_ppl.py [--adapter DIR] [--sizes 25,50,100,200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any


def main() -> None:
    import torch

    from kinject.config import Settings
    from kinject.finetune.evaluate import ClosedBookEvaluator
    from kinject.finetune.general_text import load
    from kinject.models import ensure_converted, resolve_generator

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", type=Path, default=None)
    ap.add_argument("--corpus", type=Path, default=None, help="default: the shipped one")
    ap.add_argument("--sizes", default="10,25,50,100,200")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/out/general_ppl.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings()
    base_dir = ensure_converted(resolve_generator("smollm2"), settings.data_dir / "models")
    held = [t for t in load(args.corpus) if t.split == "held_out"]
    ev = ClosedBookEvaluator(base_dir)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    base = ev.text_nll([t.text for t in held])
    per_para = (time.perf_counter() - t0) / len(held)
    adapted = None
    if args.adapter is not None:
        ev.add_adapter("a", args.adapter)
        with ev.use("a"):
            adapted = ev.text_nll([t.text for t in held])
    report: dict[str, Any] = {"paragraphs": len(held), "seconds_per_paragraph": per_para,
                              "tokens": sum(n for _, n in base)}
    for lang in sorted({t.lang for t in held}):
        rows = [p for p, t in zip(base, held, strict=True) if t.lang == lang]
        report[f"base_ppl_{lang}_all"] = math.exp(sum(s for s, _ in rows)
                                                  / sum(n for _, n in rows))
        if adapted is not None:
            rows = [p for p, t in zip(adapted, held, strict=True) if t.lang == lang]
            report[f"adapter_ppl_{lang}_all"] = math.exp(sum(s for s, _ in rows)
                                                         / sum(n for _, n in rows))
    report["base_ppl_all"] = math.exp(sum(s for s, _ in base) / sum(n for _, n in base))
    # the gate samples languages in equal shares: draw the same way
    by_lang: dict[str, list[int]] = {}
    for i, t in enumerate(held):
        by_lang.setdefault(t.lang, []).append(i)
    report["samples"] = []
    for size in (int(s) for s in args.sizes.split(",")):
        per = size // len(by_lang)
        if any(len(v) < per for v in by_lang.values()):
            continue
        rng = random.Random(f"noise:{size}")
        ppl, ratio = [], []
        for _ in range(args.draws):
            pick = [i for v in by_lang.values() for i in rng.sample(v, per)]
            nll = sum(base[i][0] for i in pick) / sum(base[i][1] for i in pick)
            ppl.append(math.exp(nll))
            if adapted is not None:
                a = sum(adapted[i][0] for i in pick) / sum(adapted[i][1] for i in pick)
                ratio.append(math.exp(a - nll))
        row: dict[str, Any] = {"n": per * len(by_lang), "base_ppl_mean": statistics.fmean(ppl),
                               "base_ppl_rel_std": statistics.pstdev(ppl)
                               / statistics.fmean(ppl)}
        if ratio:
            row.update(ratio_mean=statistics.fmean(ratio), ratio_std=statistics.pstdev(ratio))
        report["samples"].append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
