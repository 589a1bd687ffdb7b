"""``kinject finetune``: run a cycle now, run them on a schedule, list the jobs."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli import progress, render
from kinject.cli.common import fail, load_settings
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.app.values import JobRecord

finetune_app = typer.Typer(help="Fine-tuning cycles: train on what arrived, gate, promote.",
                           no_args_is_help=True)


@finetune_app.command("run")
def finetune_run(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run one cycle now: train on what arrived since the serving adapter, gate, promote."""
    from kinject.app.cycles import run_cycle_now

    try:
        settings = load_settings(config, data_dir)
        with progress.cycle(sys.stderr.isatty()) as update:
            job, result = run_cycle_now(settings, trigger="cli", progress=update)
    except KinjectError as exc:
        raise fail(exc) from exc
    render.cycle(job.id, result.to_dict())


def _echo_job(job: JobRecord) -> None:
    if job.status == "failed":
        typer.secho(f"job {job.id}: failed: {job.error}", fg=typer.colors.RED, err=True)
    else:
        render.cycle(job.id, job.result)


@finetune_app.command("schedule")
def finetune_schedule(
    every: Annotated[float | None, typer.Option("--every", metavar="MIN", min=0,
                                                help="Run every MIN minutes (0: off).")] = None,
    min_new: Annotated[int | None, typer.Option("--min-new", metavar="N", min=0,
                                                help="Run once N new examples wait (0: off).")
                       ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run cycles on a timer and/or on volume until Ctrl-C or SIGTERM; fill the corpus from
    the configured broker meanwhile (group kinject-corpus-<store id>)."""
    import signal
    import threading

    from kinject.app.cycles import run_cycles_on_schedule

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        settings = load_settings(config, data_dir)
        ran = run_cycles_on_schedule(settings, stop, every_min=every, min_new=min_new,
                                     on_result=_echo_job)
    except KeyboardInterrupt:
        ran = -1
    except (KinjectError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    if ran >= 0:
        typer.echo(f"scheduler stopped after {ran} cycle(s)")


@finetune_app.command("jobs")
def finetune_jobs(
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N.")] = 20,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List recent fine-tuning jobs with their status and outcome."""
    from kinject.app.cycles import recent_jobs

    render.jobs(recent_jobs(load_settings(config, data_dir).data_dir, limit))
