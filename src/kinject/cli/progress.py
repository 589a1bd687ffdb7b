"""Progress bars on stderr (rich, imported only when one is drawn): files published, rows
read, a fine-tuning cycle's steps, questions evaluated."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def files(items: Sequence[tuple[Path, str]]) -> Iterable[tuple[Path, str]]:
    """A bar over the files ``kinject publish`` sends (none for a single file)."""
    if len(items) < 2:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description="publishing", console=Console(stderr=True))


def rows(items: Iterable[dict[str, object]]) -> Iterable[dict[str, object]]:
    """A spinner counting the rows ``kinject ingest-sql`` publishes."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("publishing rows: {task.completed}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("rows", total=None)
        for row in items:
            yield row
            bar.advance(task)


@contextmanager
def cycle(enabled: bool) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A bar over a fine-tuning cycle's training steps, then the gate; None (off) when not
    ``enabled``."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    bar.start()
    task = bar.add_task("training", total=None)

    def update(event: dict[str, Any]) -> None:
        phase = event.get("phase")
        if phase == "train":
            loss = event.get("loss")
            desc = f"training (loss {loss:.3f})" if isinstance(loss, float) else "training"
            bar.update(task, completed=float(event["step"]),
                       total=float(event["total_steps"]), description=desc)
        elif phase in ("fisher", "gate"):
            bar.update(task, description="EWC Fisher" if phase == "fisher" else
                       "gate: closed-book evaluation")

    try:
        yield update
    finally:
        bar.stop()


@contextmanager
def evaluation(total: int) -> Iterator[Callable[[], None]]:
    """A bar over the questions ``kinject eval`` asks, drawn only when stderr is a
    terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("evaluating", total=total)
        yield lambda: progress.advance(task)
