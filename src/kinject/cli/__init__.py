"""The ``kinject`` command: one module per command group, each thin (parse the options,
call the facade or a plain function, render). ``app`` and ``main`` are the entry points
(``[project.scripts]`` and ``python -m kinject``)."""

from kinject.cli.app import app, main

__all__ = ["app", "main"]
