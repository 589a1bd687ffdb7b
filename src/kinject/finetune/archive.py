"""One adapter version as a tar archive: written as a stream, unpacked with suspicion.

The archive is how a version's bytes travel to a replica that does not share the adapters
folder (``GET /v1/adapters/{version}/archive``, fetched by finetune/fetch.py). It holds the
three files a version is served from, flat: the weights, PEFT's config and the manifest
(lineage, metrics, gate report). The EWC state stays with the trainer.

Writing opens the files first and streams from those handles, so a manifest rewritten
meanwhile (its status changes by rename) cannot tear the archive, and the archive's size is
known before its first byte. Unpacking accepts exactly those three names as regular files:
anything else (``../x``, an absolute path, a folder, a link, a device, a name twice, a
member over the size cap) refuses the whole archive before it can touch the registry.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kinject.errors import KinjectError
from kinject.finetune.registry import CONFIG, MANIFEST, WEIGHTS

MEMBERS = (WEIGHTS, CONFIG, MANIFEST)
MEDIA_TYPE = "application/x-tar"
_BLOCK = tarfile.BLOCKSIZE  # 512
_CHUNK = 1 << 20


class ArchiveError(KinjectError):
    """An adapter archive is malformed or holds something it must not."""

    code = "archive_error"


@dataclass
class AdapterArchive:
    """A version's files opened for streaming as one tar; iterate :meth:`chunks` once."""

    version: str
    size: int
    _parts: list[tuple[bytes, BinaryIO, int]] = field(repr=False)

    @classmethod
    def open(cls, folder: Path, version: str) -> AdapterArchive:
        parts: list[tuple[bytes, BinaryIO, int]] = []
        try:
            for name in MEMBERS:
                fh: BinaryIO = (folder / name).open("rb")
                try:
                    n = os.fstat(fh.fileno()).st_size
                except OSError:
                    fh.close()
                    raise
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = n, 0o644, 0
                parts.append((info.tobuf(format=tarfile.USTAR_FORMAT), fh, n))
        except OSError as exc:
            for _, opened, _ in parts:
                opened.close()
            raise ArchiveError(f"adapter {version[:12]} cannot be read: {exc.strerror}") from exc
        size = sum(len(h) + n + _pad(n) for h, _, n in parts) + 2 * _BLOCK
        return cls(version=version, size=size, _parts=parts)

    def chunks(self) -> Iterator[bytes]:
        """The archive's bytes; closes the files when done (or when the stream is dropped)."""
        try:
            for header, fh, n in self._parts:
                yield header
                left = n
                while left > 0:
                    block = fh.read(min(_CHUNK, left))
                    if not block:
                        raise ArchiveError(f"{Path(fh.name).name} of adapter "
                                           f"{self.version[:12]} shrank while being sent")
                    left -= len(block)
                    yield block
                yield b"\0" * _pad(n)
            yield b"\0" * (2 * _BLOCK)  # end of archive
        finally:
            self.close()

    def close(self) -> None:
        for _, fh, _ in self._parts:
            fh.close()


def _pad(n: int) -> int:
    return -n % _BLOCK


def unpack(archive: Path, dest: Path, max_bytes: int) -> None:
    """Unpack an adapter archive into the empty folder ``dest``; raises ArchiveError (and
    leaves ``dest`` for the caller to remove) on any member that is not one of the three
    expected regular files, or when the files together exceed ``max_bytes``."""
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                name = member.name
                if name not in MEMBERS:
                    raise ArchiveError(f"unexpected archive member {name[:80]!r} (only "
                                       f"{', '.join(MEMBERS)}, at the top level)")
                if not member.isreg():
                    raise ArchiveError(f"archive member {name!r} is not a regular file "
                                       "(links, folders and devices are refused)")
                if name in seen:
                    raise ArchiveError(f"archive member {name!r} appears twice")
                seen.add(name)
                total += member.size
                if total > max_bytes:
                    raise ArchiveError(f"archive holds more than {max_bytes:,} bytes")
                src = tar.extractfile(member)
                if src is None:  # cannot happen for a regular file; keeps mypy honest
                    raise ArchiveError(f"archive member {name!r} has no data")
                with src, (dest / name).open("xb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a readable adapter archive: {exc}") from exc
    missing = [m for m in MEMBERS if m not in seen]
    if missing:
        raise ArchiveError(f"archive lacks {', '.join(missing)}")
