"""The ACTIVE pointer of an adapter registry and its history: which version serves, every
change of it (:class:`Activation`), activation, rollback, and which version deletes displaced.

:class:`ActivePointer` is a part of :class:`~kinject.finetune.registry.AdapterRegistry`, which
supplies the lock and the versions it reads and marks.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.finetune.adapter_manifest import RegistryError, _write_atomic

if TYPE_CHECKING:
    from kinject.types import AdapterVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activation:
    """One change of the ACTIVE pointer; ``version`` None means the base model."""

    version: str | None
    previous: str | None
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



class ActivePointer:
    """The ACTIVE pointer (a line of JSON written by temp + rename) and ``history.jsonl``."""

    pointer: Path
    history_file: Path

    if TYPE_CHECKING:  # supplied by AdapterRegistry
        def _locked(self) -> AbstractContextManager[None]: ...

        def get(self, ref: str) -> AdapterVersion: ...

        def _set_status(self, ref: str, status: str, report: dict[str, Any] | None = None,
                        metrics: dict[str, float] | None = None) -> AdapterVersion: ...

    def active(self) -> str | None:
        """The serving version, or None for the base model."""
        try:
            raw = self.pointer.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        value = json.loads(raw).get("version")
        return str(value) if value else None

    def pointer_stamp(self) -> tuple[int, int] | None:
        """Changes whenever ACTIVE is rewritten (a rename gives a new inode)."""
        try:
            st = self.pointer.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def history(self) -> builtins.list[Activation]:
        if not self.history_file.is_file():
            return []
        out = []
        for line in self.history_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                out.append(Activation(d["version"], d["previous"], d["reason"], d["at"]))
        return out

    def displaced_by_taint(self) -> str | None:
        """The version that served before deletes forced ACTIVE back, while ACTIVE is still
        where they put it (the history ends in taint fallbacks); None otherwise.

        Several deletes in a row can each push ACTIVE one step further back: the answer is the
        version that served before the first of them, the last one users had accepted.
        """
        displaced = None
        for change in reversed(self.history()):
            if change.reason != "tainted":
                break
            displaced = change.previous
        return displaced

    def activate(self, ref: str | None, reason: str = "activated") -> Activation:
        """Point ACTIVE at a version (None: the base model) atomically and record it.

        A tainted version can never be activated. Activating marks the version promoted.
        """
        with self._locked():
            return self._activate(ref, reason)

    def _activate(self, ref: str | None, reason: str) -> Activation:
        version = None
        if ref is not None:
            meta = self.get(ref)
            if meta.status == "tainted":
                raise RegistryError(f"adapter {meta.version[:12]} is tainted (trained on "
                                    "deleted data) and cannot be activated")
            version = meta.version
            if meta.status != "promoted":
                self._set_status(version, "promoted")
        change = Activation(version=version, previous=self.active(), reason=reason,
                            at=time.time())
        _write_atomic(self.pointer, json.dumps({"version": version, "at": change.at,
                                                "reason": reason}) + "\n")
        with self.history_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(change.to_dict()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.info("active adapter: %s -> %s (%s)", _short(change.previous), _short(version),
                 reason)
        return change

    def rollback(self) -> Activation:
        """Go back to the version that was active before the current one, skipping tainted
        ones; the base model when there is none. Rolling back twice goes back twice."""
        with self._locked():
            stack = self._stack()
            if stack:
                stack.pop()  # the current one
            while stack and stack[-1] is not None and self.get(stack[-1]).status == "tainted":
                stack.pop()
            return self._activate(stack[-1] if stack else None, "rollback")

    def _stack(self) -> builtins.list[str | None]:
        """The versions that were active, as a stack: a rollback (or a taint) pops back to
        the version it went to rather than pushing it again."""
        stack: builtins.list[str | None] = [None]  # the base model is the floor
        for change in self.history():
            if change.reason in ("rollback", "tainted") and change.version in stack:
                while stack and stack[-1] != change.version:
                    stack.pop()
            else:
                stack.append(change.version)
        active = self.active()
        if stack[-1] != active:  # killed between writing ACTIVE and its history line
            stack.append(active)
        return stack


def _short(version: str | None) -> str:
    return version[:12] if version else "base"
