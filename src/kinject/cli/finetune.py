"""``kinject finetune``: run a cycle now, run them on a schedule, list the jobs."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kinject.cli import progress, render
from kinject.cli.common import fail, load_settings, skip_final_collection
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import Cancelled, KinjectError

if TYPE_CHECKING:
    from kinject.app.values import JobRecord

finetune_app = typer.Typer(help="Fine-tuning cycles: train on what arrived, gate, promote.",
                           no_args_is_help=True)


@finetune_app.command("run")
def finetune_run(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run one cycle now: train on what arrived since the serving adapter, gate, promote.
    SIGINT/SIGTERM stop it at the next training step (checkpointed when checkpoints are on,
    the job recorded interrupted) and it exits 128 + the signal's number (130, 143)."""
    import threading

    from kinject.app.cycles import run_cycle_now
    from kinject.serve import stop_on_signals

    stop, received = threading.Event(), list[int]()
    restore = stop_on_signals(stop, received)
    try:
        settings = load_settings(config, data_dir)
        with progress.cycle(sys.stderr.isatty()) as update:
            job, result = run_cycle_now(settings, trigger="cli", progress=update, stop=stop)
    except Cancelled as exc:
        # interrupted, not failed: a shell's `kinject finetune run && ...` must not go on
        typer.secho(f"interrupted ({exc}); the next cycle trains the same examples",
                    fg=typer.colors.YELLOW, err=True)
        skip_final_collection()
        raise typer.Exit(code=128 + (received[0] if received else 15)) from exc
    except KinjectError as exc:
        raise fail(exc) from exc
    finally:
        restore()
    render.cycle(job.id, result.to_dict())


def _echo_job(job: JobRecord) -> None:
    if job.status in ("failed", "interrupted"):
        typer.secho(f"job {job.id}: {job.status}: {job.error}", fg=typer.colors.RED, err=True)
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
    """Run cycles on a timer and/or on volume until Ctrl-C or SIGTERM (a running cycle stops
    at its next training step, recorded interrupted; exit code 0); fill the corpus from the
    configured broker meanwhile (group kinject-corpus-<store id>)."""
    import threading

    from kinject.app.cycles import run_cycles_on_schedule
    from kinject.serve import stop_on_signals

    stop = threading.Event()
    restore = stop_on_signals(stop)
    try:
        settings = load_settings(config, data_dir)
        ran = run_cycles_on_schedule(settings, stop, every_min=every, min_new=min_new,
                                     on_result=_echo_job)
    except (KinjectError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    finally:
        restore()
    typer.echo(f"scheduler stopped after {ran} cycle(s)")
    skip_final_collection()


@finetune_app.command("jobs")
def finetune_jobs(
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N.")] = 20,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List recent fine-tuning jobs with their status and outcome."""
    from kinject.app.cycles import recent_jobs

    render.jobs(recent_jobs(load_settings(config, data_dir).data_dir, limit))
