"""The ``kinject`` typer app: every command group registered in one place.

Each command module imports only typer and kinject's light modules at import time; what
is heavy loads inside the commands, so ``kinject --help`` stays instant.
"""

from __future__ import annotations

import typer

from kinject.cli import (
    adapters,
    ask,
    conflicts,
    dlq,
    doctor,
    evaluate,
    finetune,
    keys,
    publish,
    run,
    search,
)

app = typer.Typer(
    name="kinject",
    help="Retrieval-augmented knowledge injection: Kafka -> index -> RAG -> LoRA adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> None:
    """Print kinject's version."""
    from kinject import __version__

    typer.echo(__version__)


for name, command in (
    ("doctor", doctor.doctor),
    ("broker", run.broker),
    ("worker", run.worker),
    ("demo", run.demo),
    ("publish", publish.publish),
    ("ingest-sql", publish.ingest_sql),
    ("serve", run.serve),
    ("conflicts", conflicts.conflicts),
    ("search", search.search),
    ("ask", ask.ask),
    ("eval", evaluate.eval_command),
    ("version", version),
):
    app.command(name)(command)

app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(finetune.finetune_app, name="finetune")
app.add_typer(adapters.adapters_app, name="adapters")


def main() -> None:
    app()
