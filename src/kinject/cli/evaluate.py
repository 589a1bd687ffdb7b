"""``kinject eval``: a question set against a route and a model, in this process through
the facade or against a server over HTTP; writes the report and gates on bounds.

Exit codes: 0 the set ran (and met every ``--fail-under`` bound), 1 a bound was not met,
2 the set, an option or a question could not be run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kinject.cli import progress
from kinject.cli.common import fail, load_settings, usage_error
from kinject.cli.options import ConfigOpt, DataDirOpt, PassagesOpt, SyncOpt
from kinject.errors import BrokerError, KinjectError

if TYPE_CHECKING:
    from kinject.config import Settings
    from kinject.eval.runner import Asker, Target

log = logging.getLogger(__name__)


@contextmanager
def _facade_askers(settings: Settings, k: int | None, sync: bool
                   ) -> Iterator[Callable[[Target], Asker]]:
    from kinject.app import KinjectService
    from kinject.eval.runner import FacadeAsker

    with KinjectService(settings) as svc:
        if sync and settings.kafka.bootstrap_servers:
            try:
                svc.sync()
            except BrokerError as exc:
                log.warning("could not catch up from %s (%s); evaluating the local replica",
                            settings.kafka.bootstrap_servers, exc)
        yield lambda target: FacadeAsker(svc, target, k)


@contextmanager
def _http_askers(url: str, api_key: str | None, k: int | None, timeout_s: float
                 ) -> Iterator[Callable[[Target], Asker]]:
    from kinject.cli.remote import server_client
    from kinject.eval.runner import HttpAsker

    with server_client(url, api_key, timeout_s) as client:
        yield lambda target: HttpAsker(client, target, k)


def run_eval_command(set_path: Path, route: str, model: str | None, k: int | None,
                     url: str | None, api_key: str | None, compare: Sequence[str] | None,
                     fail_under: Sequence[str], out: Path | None, timeout_s: float,
                     settings: Callable[[], Settings], sync: bool
                     ) -> tuple[dict[str, Any], list[Path]]:
    """Runs the set and writes the report; raises ValueError for a bad option and
    KinjectError for what cannot be run."""
    from kinject.app.values import check_route
    from kinject.eval.dataset import load_set
    from kinject.eval.report import write_report
    from kinject.eval.runner import Target, compare_targets, evaluate, model_arg, parse_bounds

    check_route(route)
    bounds = parse_bounds(fail_under)
    items = load_set(set_path)
    if out is not None:  # before the run: found after it, the whole evaluation is lost
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out {out}: cannot write the report there: {exc.strerror}"
                             ) from exc
    targets = (compare_targets(compare[0], compare[1], route, model_arg(model)) if compare
               else [Target(route, model_arg(model))])
    askers = (_http_askers(url, api_key, k, timeout_s) if url
              else _facade_askers(settings(), k, sync))
    with askers as asker_for, progress.evaluation(len(items) * len(targets)) as tick:
        report = evaluate(set_path.name, items, targets, asker_for, bounds, tick)
    paths = write_report(report, out) if out is not None else []
    return report, paths


def eval_command(
    set_path: Annotated[Path, typer.Argument(
        metavar="SET.jsonl", exists=True, dir_okay=False,
        help="Question set: one JSON object a line with question, reference (\"\" or null: "
             "should abstain), optional sources (ids) and language (en, zh).")],
    route: Annotated[str, typer.Option(help="rag, adapter, both or auto.")] = "rag",
    model: Annotated[str | None, typer.Option(
        "--model", "--adapter",
        help="kinject (the active adapter, default), kinject-base, kinject@<version> or a "
             "version.")] = None,
    k: PassagesOpt = None,
    url: Annotated[str | None, typer.Option(
        help="Evaluate a running server (POST /v1/ask) instead of this process.")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="KINJECT_EVAL_API_KEY", help="API key for --url (read role).")] = None,
    compare: Annotated[tuple[str, str] | None, typer.Option(
        metavar="A B", help="Two routes or two models side by side, with per-question "
                            "differences.")] = None,
    fail_under: Annotated[list[str] | None, typer.Option(
        metavar="METRIC=VALUE", help="Repeatable: exit 1 when a metric (of every run) is "
                                     "below VALUE, e.g. token_f1=0.5.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json, report.html and "
                                           "report.png.")] = Path("eval-report"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON to stdout.")
                       ] = False,
    timeout_s: Annotated[float, typer.Option(help="Per-question HTTP timeout (--url).")
                         ] = 120.0,
    sync: SyncOpt = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Evaluate answers on a question set (JSONL): exact match, containment, token F1,
    ROUGE-L, BLEU, entity F1, citations, abstention, latency; optionally gate on bounds."""
    if url is not None:
        from kinject.logs import setup_logging

        setup_logging()
    try:
        report, paths = run_eval_command(
            set_path, route, model, k, url, api_key, compare, fail_under or [], out,
            timeout_s, lambda: load_settings(config, data_dir), sync)
    except ValueError as exc:
        raise usage_error(exc) from exc
    except KinjectError as exc:
        raise fail(exc) from exc
    _echo_report(report, paths, as_json)
    if not report["gate"]["passed"]:
        raise typer.Exit(code=1)


def _echo_report(report: dict[str, Any], paths: Sequence[Path], as_json: bool) -> None:
    from kinject.eval.report import summary_lines

    if as_json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        typer.echo("\n".join(summary_lines(report)))
        typer.echo("report: " + ", ".join(str(p) for p in paths))
    for line in report["gate"]["failures"]:
        typer.secho(f"fail: {line}", fg=typer.colors.RED, err=True)
