"""Logging set-up for the CLI and the API, with secrets kept out of every line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# key=value / "key": "value" pairs whose value must never be logged; a quoted value (a
# dict's repr: kafka-python logs its configuration at DEBUG) up to its closing quote,
# spaces, commas and escaped quotes included.
_SECRET = re.compile(
    r"(?i)((?:api[_-]?key|password|passwd|secret|token|authorization)[\"']?\s*[:=]\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[\"']?[^\s\"',;]+)"
)


# Bearer credentials, and kinject API keys wherever they appear (kj_<id>_<secret>).
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_API_KEY = re.compile(r"\bkj_[0-9a-f]+_[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """Replace the values of secret-looking key/value pairs, bearer credentials and kinject
    API keys with ``***``."""
    text = _API_KEY.sub("kj_***", text)
    text = _BEARER.sub(r"\1***", text)
    return _SECRET.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class _RoutineKafkaStep(logging.Filter):
    """Drops kafka-python's "Task ... ran for 0.27s (>0.100s threshold). It is blocking the
    event loop" warnings: its I/O loop times each step, and a CPU busy with models (or other
    processes) makes steps over 0.1 s routine; `kinject serve` logged a hundred of them in
    eight minutes, none calling for anything. Its other warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and "threshold). It is blocking" in record.msg)


class _CancelledByClose(logging.Filter):
    """Drops kafka-python's "Metadata refresh: failed Cancelled" ERROR: the request was
    cancelled because kinject closed that client (a shutdown, a reconnect), nothing failed;
    its fetcher logs the same cancellation at INFO. While kinject closes its clients on the
    way out (``kafka_closing``), a refresh whose socket that close shut ("Transport closed for
    writes") is dropped too. A refresh that really failed still shows."""

    closing = 0  # > 0: a shutdown is closing the Kafka clients

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != "Metadata refresh: failed %s" or len(args) != 1:
            return True
        if type(args[0]).__name__ == "Cancelled":
            return False
        return not (self.closing > 0 and "Transport closed" in str(args[0]))


_KAFKA_STEPS = _RoutineKafkaStep()
_KAFKA_CANCELLED = _CancelledByClose()


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr through rich when it is a terminal, plain lines otherwise."""
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty third-party loggers stay at WARNING unless asked for DEBUG.
    if level.upper() != "DEBUG":
        for name in ("kafka", "httpx", "urllib3", "transformers", "sentence_transformers", "jieba",
                     "faiss", "RapidOCR", "rapidocr"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("kafka.net.selector").addFilter(_KAFKA_STEPS)  # once: same object
    logging.getLogger("kafka.cluster").addFilter(_KAFKA_CANCELLED)


@contextmanager
def kafka_closing() -> Iterator[None]:
    """Within: the process is stopping and closing its Kafka clients, so a metadata refresh
    that the close cut off is not reported as an ERROR (a shutdown that logs errors makes
    users look for a failure that did not happen)."""
    _CancelledByClose.closing += 1
    try:
        yield
    finally:
        _CancelledByClose.closing -= 1


@contextmanager
def quiet_while(active: bool, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the root log level while a live progress display owns the terminal, so log
    lines do not tear it apart; warnings and errors still show."""
    root = logging.getLogger()
    before = root.level
    if active:
        root.setLevel(max(level, before))
    try:
        yield
    finally:
        root.setLevel(before)
