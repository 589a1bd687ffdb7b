"""Writes an evaluation report: ``report.json`` (everything), ``report.html`` (aggregate and
per-question tables) and ``report.png`` (a bar chart, when matplotlib is installed)."""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from kinject.eval.runner import GATE_METRICS, ITEM_METRICS

log = logging.getLogger(__name__)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def _write_atomic(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The single runs of a report: one, or two for a comparison."""
    return report["runs"]


def render_html(report: dict[str, Any]) -> str:
    rs = runs(report)
    keys = [k for k in rs[0]["aggregate"] if k != "n"]
    head = "".join(f"<th>{html.escape(r['target']['label'])}</th>" for r in rs)
    agg = "".join(f"<tr><td>{k}</td>" + "".join(f"<td>{_fmt(r['aggregate'][k])}</td>"
                                                for r in rs) + "</tr>" for k in keys)
    cols = ["line", "question", "reference"] + [f"answer ({i + 1})" for i in range(len(rs))]
    shown = ("exact_match", "contains", "token_f1", "rouge_l")
    cols += [f"{k} ({i + 1})" for i in range(len(rs)) for k in shown]
    body = []
    for n, item in enumerate(rs[0]["items"]):
        its = [r["items"][n] for r in rs]
        cells = [item["line"], item["question"], item["reference"] or "(abstain)"]
        cells += [it["answer"] + (" [abstained]" if it["abstained"] else "") for it in its]
        cells += [it["metrics"][k] for it in its for k in shown]
        body.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>kinject eval</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
            f"<h1>kinject eval: {html.escape(report.get('set', ''))}</h1>"
            f"<table><tr><th>metric</th>{head}</tr>{agg}</table><h2>questions</h2><table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
            + "".join(body) + "</table></body></html>\n")


def write_plot(report: dict[str, Any], path: Path) -> bool:
    """A grouped bar chart of the quality metrics per run; False (and a log line) when
    matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        log.info("no plot: matplotlib is not installed (pip install 'kinject[bench]')")
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = runs(report)
    names = [k for k in GATE_METRICS if any(r["aggregate"].get(k) is not None for r in rs)]
    width = 0.8 / len(rs)
    fig, ax = plt.subplots(figsize=(max(6.0, len(names) * 0.9), 4))
    for i, r in enumerate(rs):
        values = [r["aggregate"].get(k) or 0.0 for k in names]
        ax.bar([x + i * width for x in range(len(names))], values, width,
               label=r["target"]["label"])
    ax.set_xticks([x + width * (len(rs) - 1) / 2 for x in range(len(names))], names,
                  rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"kinject eval: {report.get('set', '')}")
    ax.legend(fontsize="small", framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes the report's files into ``out_dir`` (created); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.html"]
    _write_atomic(paths[0], json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    _write_atomic(paths[1], render_html(report))
    if write_plot(report, out_dir / "report.png"):
        paths.append(out_dir / "report.png")
    return paths


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The aggregate numbers as text lines, one metric a line, a column per run."""
    rs = runs(report)
    keys = ["n", *ITEM_METRICS, "abstention_rate", "abstention_recall", "answered_rate",
            "n_cached", "latency_p50_s", "latency_p95_s"]
    width = max(len(k) for k in keys)
    cols = [max(8, len(r["target"]["label"])) for r in rs]
    lines = [" " * width + "  " + "  ".join(f"{r['target']['label']:>{c}}"
                                            for r, c in zip(rs, cols, strict=True))]
    for k in keys:
        vals = [r["aggregate"].get(k) for r in rs]
        cells = ["–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
                 for v in vals]
        lines.append(f"{k:<{width}}  " + "  ".join(f"{v:>{c}}"
                                                   for v, c in zip(cells, cols, strict=True)))
    for r in rs:
        agg = r["aggregate"]
        if agg.get("n") and agg.get("n_cached") == agg["n"]:
            # Latency "–" alone reads as a failure: say why it is not measured.
            lines.append(f"{r['target']['label']}: latency not measured, all {agg['n']} "
                         "answers came from the answer cache (asked before, index unchanged; "
                         "KINJECT_RAG__CACHE_SIZE=0 on the server turns the cache off)")
    if "comparison" in report:
        changed = sum(1 for i in report["comparison"]["items"] if i["changed"])
        lines.append(f"{changed} question(s) scored differently between the two runs")
    return lines
