"""``kinject doctor``: which parts are installed and resolvable."""

from __future__ import annotations

import typer

from kinject.cli.common import fail, load_settings
from kinject.cli.options import ConfigOpt, DataDirOpt
from kinject.errors import KinjectError


def doctor(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Show which parts are installed and resolvable: models, broker, OCR, GPU, data dir."""
    from kinject.doctor import print_report, run_checks

    try:
        settings = load_settings(config, data_dir)
    except KinjectError as exc:
        raise fail(exc) from exc
    checks = run_checks(settings)
    print_report(checks)
    if any(c.status == "missing" and c.required for c in checks):
        raise typer.Exit(code=1)
