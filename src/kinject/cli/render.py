"""Everything the commands print: rich tables, JSON lines, answers and cycle outcomes.

rich is imported inside each function, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from kinject.app.values import DeadLetter
    from kinject.types import Answer, Hit

SNIPPET_CHARS = 160


def when(t: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    return datetime.datetime.fromtimestamp(t).isoformat(" ", "seconds") if t else "-"


def _table(title: str, columns: Iterable[str]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def _esc(text: object) -> str:
    """``text`` shown as it is in a rich table (its square brackets are not markup)."""
    from rich.markup import escape

    return escape(str(text))


def _print(renderable: object) -> None:
    from rich.console import Console

    Console().print(renderable)


def json_lines(objects: Iterable[dict[str, Any]]) -> None:
    for obj in objects:
        typer.echo(json.dumps(obj, ensure_ascii=False))


def dead_letters(letters: Sequence[DeadLetter], limit: int) -> None:
    shown = letters[-limit:]
    table = _table(f"{len(shown)} of {len(letters)} dead letter(s)",
                   ("id", "time", "stage", "reason", "source id", "seen"))
    for d in shown:
        seen = str(d.seen) + (" (replayed)" if d.replayed_at else "")
        table.add_row(_esc(d.id), when(d.at), _esc(d.stage), _esc(d.reason),
                      _esc(d.source_id), seen)
    _print(table)


def dead_letter(letter: DeadLetter) -> None:
    typer.echo(json.dumps(letter.to_dict(), indent=2, ensure_ascii=False))
    text = letter.payload_text()
    if letter.value is None:
        typer.echo("payload: none (a tombstone)")
    elif text is None:
        typer.echo(f"payload: {len(letter.value)} bytes of binary data")
    else:
        typer.echo("payload:\n" + text)


def conflicts(found: Sequence[dict[str, Any]]) -> None:
    table = _table(f"{len(found)} conflict(s)",
                   ("entity", "field", "value", "source id", "record time", "searched"))
    for c in found:
        for n, v in enumerate(c["values"]):
            table.add_row(_esc(c["entity"]) if n == 0 else "",
                          _esc(c["field"]) if n == 0 else "",
                          _esc(v["value"]), _esc(v["source_id"]), when(v["ts"]),
                          "yes" if n == 0 else "")
    _print(table)


def jobs(records: Sequence[Any]) -> None:
    table = _table(f"{len(records)} fine-tuning job(s)",
                   ("job", "created", "status", "stage", "version", "error"))
    for j in records:
        table.add_row(j.id, when(j.created_at), j.status, j.stage,
                      str(j.result.get("version") or "")[:12], _esc(j.error or ""))
    _print(table)


def adapters(active: str | None, versions: Sequence[dict[str, Any]]) -> None:
    table = _table(f"adapters (serving: {active[:12] if active else 'base model'})",
                   ("", "version", "status", "parent", "cycle", "created", "new acc",
                    "sources"))
    for v in versions:
        acc = v["metrics"].get("new_accuracy")
        table.add_row("*" if v["active"] else "", v["version"][:12], v["status"],
                      (v["parent"] or "base")[:12], str(v["corpus_cycle"]),
                      when(v["created_at"]), f"{acc:.2f}" if isinstance(acc, float) else "-",
                      str(len(v["lineage"])))
    _print(table)


def adapter_change(verb: str, change: dict[str, Any]) -> None:
    typer.echo(f"{verb} {str(change['version'] or 'base model')[:12]} "
               f"(was {str(change['previous'] or 'base model')[:12]})")


def cycle(job_id: str, r: dict[str, object]) -> None:
    """One fine-tuning cycle's outcome: skipped, or promoted/rejected with the gate's
    reasons."""
    version = str(r.get("version") or "")[:12] or "-"
    parent = str(r.get("parent") or "")[:12] or "base"
    if r["status"] == "skipped":
        typer.echo(f"job {job_id}: nothing new since corpus cycle {r['corpus_cycle']}; "
                   f"serving {parent}")
        return
    color = typer.colors.GREEN if r["status"] == "promoted" else typer.colors.YELLOW
    typer.secho(f"job {job_id}: {r['status']} {version} (from {parent}, corpus cycle "
                f"{r['corpus_cycle']}, {r['train_examples']} examples, "
                f"{float(r['seconds']):.0f} s)", fg=color)  # type: ignore[arg-type]
    report = r.get("report") or {}
    for reason in report.get("reasons", []) if isinstance(report, dict) else []:
        typer.echo(f"  - {reason}")


# -- search hits -------------------------------------------------------------------------------
def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a hit's text: prose on one line, code blocks as laid out (indented, one
    line a line), cut at ``limit`` characters (code: at a line end, within twice that)."""
    from kinject.app.values import split_code

    parts = split_code(text)
    if not any(is_code for is_code, _ in parts):
        flat = re.sub(r"\s+", " ", text).strip()
        return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
    shown = "".join(part if is_code else re.sub(r"[^\S\n]+", " ", part)
                    for is_code, part in parts)
    shown = re.sub(r"\n{2,}", "\n", shown).strip()
    if len(shown) <= 2 * limit:
        return shown
    cut = shown.rfind("\n", 0, 2 * limit)
    return shown[: cut if cut > limit // 2 else 2 * limit - 1].rstrip() + "\n…"


def hit_dict(rank: int, hit: Hit) -> dict[str, Any]:
    meta = dict(hit.meta)
    return {
        "rank": rank,
        "score": round(hit.score, 6),
        "source_id": hit.source_id,
        "chunk_id": hit.chunk_id,
        "snippet": snippet(hit.text),
        "text": hit.text,
        "kind": meta.pop("kind", None),
        "lang": meta.pop("lang", None),
        "meta": meta,
    }


def print_hits(hits: Sequence[Hit], *, as_json: bool = False) -> None:
    if as_json:
        for rank, hit in enumerate(hits, 1):
            sys.stdout.write(json.dumps(hit_dict(rank, hit), ensure_ascii=False,
                                        default=str) + "\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not hits:
        console.print("no hits")
        return
    fused = "fused" in hits[0].meta and any(
        a.score < b.score for a, b in zip(hits, hits[1:], strict=False))
    # Hybrid hits are ordered by the fused score but scored by cosine (comparable across
    # queries): say so, or a score that rises down the list reads as a bug.
    caption = ("ranked by fusing the vector and BM25 scores; score is the cosine "
               "similarity" if fused else None)
    table = Table(title=f"{len(hits)} hit(s)", caption=caption)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source id", overflow="fold")
    table.add_column("chunk id", overflow="fold")
    table.add_column("snippet", overflow="fold", ratio=3)
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", _esc(hit.source_id), hit.chunk_id[:12],
                      _esc(snippet(hit.text)))
    console.print(table)


# -- answers -----------------------------------------------------------------------------------
def answer_dict(answer: Answer) -> dict[str, Any]:
    return dataclasses.asdict(answer)


def print_answer(answer: Answer, *, as_json: bool = False, rich: bool | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(answer_dict(answer), ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
        return
    if rich is None:
        rich = sys.stdout.isatty()
    version = answer.adapter_version[:12] if answer.adapter_version else "base model"
    footer = f"route {answer.route}, {version}, {answer.timings.get('total_s', 0.0):.2f}s"
    if not rich:
        lines = [answer.text, ""]
        lines += [f"[{c.n}] {c.label} (score {c.score:.3f}): {c.snippet}"
                  for c in answer.citations]
        if not answer.citations:
            lines.append("no sources" if not answer.abstained else "no relevant source found")
        lines.append(footer)
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    _rich_answer(answer, footer)


def _rich_answer(answer: Answer, footer: str) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    style = "yellow" if answer.abstained else "green"
    console.print(Panel(_esc(answer.text), title="answer", border_style=style,
                        subtitle=footer))
    if answer.citations:
        table = Table(show_header=True, header_style="bold")
        table.add_column("n", justify="right")
        table.add_column("source", overflow="fold")
        table.add_column("score", justify="right")
        table.add_column("snippet", overflow="fold")
        for c in answer.citations:
            table.add_row(f"[{c.n}]", _esc(c.label), f"{c.score:.3f}", _esc(c.snippet))
        console.print(table)
