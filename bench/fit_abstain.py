"""Fit the reader's abstention (``kinject.rag.abstain.AbstainModel``) on the dev splits.

Run the dev benches with ``--dump-reader`` (the reader then reads every question's best unit,
its bar aside, and logs the signals it weighed), then this script:

    python bench/rag_quality.py --split dev --no-langchain --threads 1 --out OUT/rq \\
        --dump-reader OUT/rq/dump.jsonl
    python bench/realdocs.py --split dev --threads 1 --out OUT/rd --dump-reader OUT/rd/dump.jsonl
    python bench/fit_abstain.py --rag-quality OUT/rq --realdocs OUT/rd

Each question's label: its probe reading is right (the bench's own check) or wrong (a wrong
value, or any answer to a question no passage answers). Only questions whose unit was weighed
(scored against others, or against the bar) are fitted: a question whose one naming unit is
read unweighed keeps the reading's own NONE. A logistic regression (scikit-learn, standardised
features, L2) gives P(right); the threshold maximises right answers - ``--wrong-cost`` x wrong
answers over both benches. Printed: the AbstainModel to paste into ``rag/abstain.py``
(``DEFAULT``), and per bench the figures of the old PMI bars, of no abstention, of the model
``rag/abstain.py`` holds now (``default``) and of the new one, in-sample and leave-one-out
(what a question unseen by the fit would get). Dev only: never feed it a test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kinject.rag.abstain import DEFAULT_ABSTAIN, FEATURES, feature  # noqa: E402
from kinject.rag.questions import ABSTAIN_TEXT, ABSTAIN_TEXT_ZH  # noqa: E402


def _dump(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.setdefault(row["question"], row)
    return out


def load(bench: str, folder: Path) -> list[dict[str, Any]]:
    """One row a question: answerable, answered (the probe), right (the probe's reading),
    group (how the bench reports it) and the reader's signals."""
    signals = _dump(folder / "dump.jsonl")
    rows = []
    name = "rag_quality.csv" if bench == "rag_quality" else "realdocs_dev.csv"
    with (folder / name).open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if bench == "rag_quality":
                answerable = bool(r["expected"])
                answered = r["kinject"] not in (ABSTAIN_TEXT, ABSTAIN_TEXT_ZH)
                group = r["family"] if r["family"] in ("unnamed", "near") else r["lang"]
                right = answered and answerable and r["kinject_right"] == "True"
            else:
                answerable = bool(r["reference"])
                answered = r["abstained"] != "True"
                group = r["language"]
                right = answered and answerable and r["right"] == "True"
            sig = signals.get(r["question"])
            rows.append({"bench": bench, "question": r["question"], "answerable": answerable,
                         "answered": answered, "right": right, "group": group, "sig": sig})
    return rows


SCOPE = "weighed"  # or "all": also the unweighed single naming units (set by --scope)


def weighed(row: dict[str, Any]) -> bool:
    sig = row["sig"]
    return (sig is not None and row["answered"] and "ans_logp" in sig
            and (SCOPE == "all" or sig.get("single") == 0.0))


def figures(rows: list[dict[str, Any]], keep: list[bool]) -> dict[str, Any]:
    """Answerable questions answered right, and unanswerable ones abstained on, per group,
    when each question's probe answer stands where ``keep`` says so."""
    out: dict[str, Any] = {}
    for group in sorted({r["group"] for r in rows}) + ["all"]:
        part = [(r, k) for r, k in zip(rows, keep, strict=True)
                if group in ("all", r["group"])]
        ans = [r["right"] and k for r, k in part if r["answerable"]]
        una = [not (r["answered"] and k) for r, k in part if not r["answerable"]]
        out[group] = {"right": round(sum(ans) / len(ans), 3) if ans else None,
                      "abstain": round(sum(una) / len(una), 3) if una else None,
                      "n": len(ans), "n_unknown": len(una)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rag-quality", type=Path, required=True)
    p.add_argument("--realdocs", type=Path, required=True)
    p.add_argument("--wrong-cost", type=float, default=2.0,
                   help="a wrong answer costs this many right ones")
    p.add_argument("--c", type=float, default=1.0, help="inverse L2 strength")
    p.add_argument("--scope", choices=("weighed", "all"), default="weighed",
                   help="which readings the model judges: those whose unit was weighed, or "
                        "also a single naming unit read unweighed")
    args = p.parse_args()
    global SCOPE
    SCOPE = args.scope
    from sklearn.linear_model import LogisticRegression

    rows = load("rag_quality", args.rag_quality) + load("realdocs", args.realdocs)
    fit_rows = [r for r in rows if weighed(r)]
    x = np.array([[feature(r["sig"], f) for f in FEATURES] for r in fit_rows])
    y = np.array([int(r["right"]) for r in fit_rows])
    means, scales = x.mean(0), np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    z = (x - means) / scales
    model = LogisticRegression(C=args.c).fit(z, y)
    p_in = model.predict_proba(z)[:, 1]
    p_loo = np.zeros(len(y))
    for i in range(len(y)):
        mask = np.arange(len(y)) != i
        m = LogisticRegression(C=args.c).fit(z[mask], y[mask])
        p_loo[i] = m.predict_proba(z[i:i + 1])[0, 1]

    def gain(p: np.ndarray, t: float) -> float:
        keep = p >= t
        return float((y[keep] == 1).sum() - args.wrong_cost * (y[keep] == 0).sum())

    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    best = max(grid, key=lambda t: (gain(p_in, t), -t))
    print(f"{len(rows)} questions, {len(fit_rows)} weighed and answered by the probe "
          f"({int(y.sum())} right); threshold {best} (gain {gain(p_in, best)})", file=sys.stderr)
    at = {id(r): i for i, r in enumerate(fit_rows)}

    def policy(kind: str) -> list[bool]:
        out = []
        for r in rows:
            if not weighed(r):
                out.append(r["sig"] is None or r["sig"].get("bar_ok", 1.0) == 1.0)
            elif kind == "bar":
                out.append(r["sig"].get("bar_ok") == 1.0)
            elif kind == "none":
                out.append(True)
            elif kind == "default":  # the model rag/abstain.py holds now, for comparison
                out.append(DEFAULT_ABSTAIN is None or DEFAULT_ABSTAIN.answers(r["sig"]))
            else:
                out.append(bool((p_in if kind == "model" else p_loo)[at[id(r)]] >= best))
        return out

    report = {}
    for bench in ("rag_quality", "realdocs"):
        idx = [i for i, r in enumerate(rows) if r["bench"] == bench]
        part = [rows[i] for i in idx]
        report[bench] = {kind: figures(part, [policy(kind)[i] for i in idx])
                         for kind in ("bar", "none", "default", "model", "loo")}
    print(json.dumps(report, indent=1), file=sys.stderr)
    print("AbstainModel(\n"
          f"    weights={tuple(round(float(w), 4) for w in model.coef_[0])},\n"
          f"    means={tuple(round(float(v), 4) for v in means)},\n"
          f"    scales={tuple(round(float(v), 4) for v in scales)},\n"
          f"    bias={round(float(model.intercept_[0]), 4)}, threshold={best})")


if __name__ == "__main__":
    main()
