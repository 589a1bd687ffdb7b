"""A failure that repeats while it lasts (a broker down, a file locked, a bad version tried
again and again): one error line when it starts or changes, debug lines while it lasts, and,
where one is given, an info line when it is over."""

from __future__ import annotations

import logging


class OngoingFailure:
    """What failed last (None: nothing fails now), logged once while it lasts.

    ``recovered``: the info line logged when a failure ends (None: no line)."""

    def __init__(self, log: logging.Logger, recovered: str | None = None) -> None:
        self._log = log
        self._recovered = recovered
        self.message: str | None = None

    def failed(self, message: str, line: str, *args: object) -> bool:
        """A failure described by ``message`` (what tells one failure from another): ``line %
        args`` is logged as an error when it is new, ``message`` at debug level while it
        lasts. Returns whether it was new."""
        new = message != self.message
        self.message = message
        if new:
            self._log.error(line, *args)
        else:
            self._log.debug("%s (again)", message)
        return new

    def ok(self) -> None:
        """Nothing fails now: the next failure is new, and one that was going on is over."""
        if self.message is not None and self._recovered:
            self._log.info(self._recovered)
        self.message = None
