"""The plain functions behind ``kinject publish``: files, directories, globs, JSON lines.

Source ids are stable across machines: a file inside a directory argument is named by its
path relative to that directory, any other file by its path relative to the working
directory (by its absolute path when it lies outside it), with ``--prefix`` in front and one
``/`` between them. A failing file or line is reported and the rest go on.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kinject.config import Settings
from kinject.errors import ConfigError, KinjectError
from kinject.ingest.envelope import decode_record, is_sidecar
from kinject.ingest.uris import UriPolicy
from kinject.stream.clients import BOOTSTRAP_SETTING
from kinject.stream.producer import Producer
from kinject.stream.serve_broker import with_serve_broker

_log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
# Wraps the files being published, e.g. in a progress bar.
Progress = Callable[[Sequence[tuple[Path, str]]], Iterable[tuple[Path, str]]]


@dataclass
class PublishSummary:
    """What one ``publish`` run did; ``failures`` holds (where, why) pairs."""

    topic: str = ""
    published: int = 0
    resent: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def require_bootstrap(settings: Settings) -> str:
    """The configured bootstrap servers; publishing into a throwaway broker is refused."""
    if not settings.kafka.bootstrap_servers:
        raise ConfigError(
            "no Kafka bootstrap servers are configured, and the embedded broker lives only "
            "as long as the process that runs it: records published into a new one would be "
            f"lost. Set {BOOTSTRAP_SETTING} to a running broker, for example the address "
            "`kinject broker` prints (127.0.0.1:9092), or start `kinject serve` on this data "
            f"dir ({settings.data_dir}): its embedded broker is found without a setting."
        )
    return settings.kafka.bootstrap_servers


def _is_glob(target: str) -> bool:
    return any(c in target for c in "*?[")


def _relative_id(path: Path, base: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(base.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _with_prefix(prefix: str, name: str) -> str:
    """``prefix`` in front of ``name``; an absolute name loses its leading ``/`` under a prefix
    (``docs/`` + ``/srv/a.md`` is ``docs/srv/a.md``, not ``docs//srv/a.md``)."""
    return prefix + name.lstrip("/") if prefix else name


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and not is_sidecar(path):
                yield path


def collect_files(
    targets: Sequence[str],
    *,
    cwd: Path | None = None,
    prefix: str = "",
    source_id: str | None = None,
) -> list[tuple[Path, str]]:
    """(path, source id) for every file the targets name, in a stable order.

    Raises ConfigError for a target that names nothing, two files that would get the same source
    id, or ``source_id`` with more than one file.
    """
    cwd = cwd or Path.cwd()
    found: list[tuple[Path, str]] = []
    for target in targets:
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = cwd / path
        if path.is_dir():
            found += [(p, _with_prefix(prefix, p.relative_to(path).as_posix()))
                      for p in _walk(path)]
        elif path.is_file():
            found.append((path, _with_prefix(prefix, _relative_id(path, cwd))))
        elif _is_glob(target):
            matches = sorted(glob.glob(str(path), recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file() and not is_sidecar(Path(m))]
            if not files:
                raise ConfigError(f"no files match {target!r}")
            found += [(p, _with_prefix(prefix, _relative_id(p, cwd))) for p in files]
        else:
            raise ConfigError(f"{target} does not exist")
    named: dict[str, Path] = {}
    unique: list[tuple[Path, str]] = []
    for p, sid in found:
        other = named.setdefault(sid, p)
        if other is p:
            unique.append((p, sid))
        elif other.resolve() != p.resolve():
            # the second record would silently replace the first one's knowledge
            raise ConfigError(f"{other} and {p} would both be published as {sid!r}")
    found = unique  # a file named twice (a directory and a file in it, say) is sent once
    if source_id is not None:
        if len(found) != 1:
            raise ConfigError(f"--source-id names one file, but the targets hold {len(found)}")
        found = [(found[0][0], source_id)]
    return found


def publish_files(
    producer: Producer,
    files: Sequence[tuple[Path, str]],
    summary: PublishSummary,
    progress: Progress | None = None,
) -> None:
    """Publish each file; a file that fails is added to ``summary.failures``."""
    for path, sid in progress(files) if progress else files:
        try:
            producer.publish_path(path, sid)
        except KinjectError as exc:
            _log.debug("could not publish %s: %s", path, exc)
            summary.failures.append((str(path), str(exc)))
        else:
            summary.published += 1


def publish_lines(producer: Producer, stream: TextIO, summary: PublishSummary) -> None:
    """Publish every JSON-lines envelope of ``stream``; blank lines are skipped, bad ones
    reported by line number. A ``uri`` is read here, on the publishing machine."""
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = decode_record(line.encode("utf-8"), None, uris=UriPolicy.local_files())
            producer.publish(record)
        except KinjectError as exc:
            summary.failures.append((f"line {lineno}", str(exc)))
        else:
            summary.published += 1


@contextmanager
def outbox_producer(settings: Settings, max_record_bytes: int | None = None
                    ) -> Iterator[tuple[Producer, int]]:
    """A producer to the configured (or embedded) broker through the data directory's durable
    outbox, and how many records the outbox still held for a broker that lost them (re-sent
    first).

    Beside a running serve whose embedded broker this is, the outbox is not pruned here:
    serve's outbox keeper does it once its index and corpus have read the records' chunk
    events, which that broker's restart would lose."""
    from kinject.stream.broker import connect
    from kinject.stream.outbox import Outbox
    from kinject.stream.producer import DEFAULT_MAX_RECORD_BYTES
    from kinject.stream.serve_broker import running_serve_broker

    limit = max_record_bytes or DEFAULT_MAX_RECORD_BYTES
    with (
        connect(settings.kafka) as bootstrap,
        Outbox(settings.data_dir / OUTBOX_FILE) as outbox,
        Producer(settings.kafka, bootstrap, outbox, max_record_bytes=limit) as producer,
    ):
        serve = running_serve_broker(settings.data_dir)
        if serve is None or serve[0] != bootstrap:
            outbox.confirm(settings.kafka, bootstrap)
        yield producer, outbox.republish(producer)


def run_publish(
    settings: Settings,
    targets: Sequence[str] = (),
    *,
    delete: str | None = None,
    source_id: str | None = None,
    prefix: str = "",
    stdin: TextIO | None = None,
    progress: Progress | None = None,
    max_record_bytes: int | None = None,
) -> PublishSummary:
    """Publish files, stdin JSON lines (target ``-``) or a delete; re-send what the outbox
    still holds for a broker that lost it. Raises KinjectError when nothing can start."""
    settings = with_serve_broker(settings)
    require_bootstrap(settings)
    from_stdin = "-" in targets
    files = collect_files([t for t in targets if t != "-"], prefix=prefix, source_id=source_id)
    summary = PublishSummary()
    with outbox_producer(settings, max_record_bytes) as (producer, resent):
        summary.topic, summary.resent = producer.topic, resent
        if delete is not None:
            producer.delete(delete, reason="kinject publish --delete")
            summary.published += 1
        publish_files(producer, files, summary, progress)
        if from_stdin:
            if stdin is None:
                raise ConfigError("'-' reads JSON lines from stdin, but no stdin was given")
            publish_lines(producer, stdin, summary)
    return summary
