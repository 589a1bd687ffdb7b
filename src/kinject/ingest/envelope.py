"""The JSON envelope on ``kinject.records`` and its conversion to and from :class:`Record`.

Value (UTF-8 JSON)::

    {"op": "upsert" | "delete", "source_id": "...", "kind": "csv",
     "content": "text" | "content_b64": "base64" | "uri": "/local/path",
     "meta": {...}, "ts": 1700000000.0}

An upsert carries exactly one of ``content``, ``content_b64`` and ``uri``; a delete needs
none. A Kafka tombstone (value ``None``) deletes the source named by the message key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kinject.errors import BadRecord
from kinject.ingest.sniff import sniff_kind
from kinject.ingest.uris import UriPolicy, read_file
from kinject.types import KINDS, Record

log = logging.getLogger(__name__)

_PAYLOAD_FIELDS = ("content", "content_b64", "uri")
# Binary kinds always travel as base64, even when their bytes happen to decode as UTF-8.
_BINARY_KINDS = frozenset({"image", "pdf", "audio"})
SIDECAR_SUFFIX = ".meta.json"
# meta is for filters, titles and captions; deeper nesting is refused before it reaches
# code that recurses over it (JSON encoders, flatteners).
MAX_META_DEPTH = 32


class Envelope(BaseModel):
    """One message value on ``kinject.records``. Unknown fields are refused (typos too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["upsert", "delete"] = "upsert"
    source_id: str = Field(min_length=1)
    kind: str | None = None
    content: str | None = None
    content_b64: str | None = None
    uri: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    ts: float | None = None

    @field_validator("source_id")
    @classmethod
    def _source_id_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str | None) -> str | None:
        if v is not None and v not in KINDS:
            raise ValueError(f"unknown kind {v!r}; known kinds: {', '.join(KINDS)}")
        return v

    @field_validator("content", "uri")
    @classmethod
    def _unicode_text(cls, v: str | None) -> str | None:
        if v is not None:
            _no_lone_surrogate(v)
        return v

    @field_validator("uri")
    @classmethod
    def _no_control_characters(cls, v: str | None) -> str | None:
        # A NUL ends a path in the OS and a CR/LF splits a request line: a uri holding one
        # names something other than what it says.
        if v is not None:
            found = _CONTROL.search(v)
            if found is not None:
                raise ValueError(f"holds a control character (U+{ord(found.group()):04X}) at "
                                 f"character {found.start()}")
        return v

    @field_validator("meta")
    @classmethod
    def _shallow_meta(cls, v: dict[str, Any]) -> dict[str, Any]:
        if _depth(v) > MAX_META_DEPTH:
            raise ValueError(f"is nested deeper than {MAX_META_DEPTH} levels")
        stack: list[Any] = [v]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                _no_lone_surrogate(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return v

    @model_validator(mode="after")
    def _one_payload(self) -> Envelope:
        given = [f for f in _PAYLOAD_FIELDS if getattr(self, f) is not None]
        if self.op == "upsert" and len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"an upsert needs exactly one of content, content_b64, uri (found: {found})"
            )
        return self


def decode_record(
    value: bytes | None,
    key: bytes | None,
    position: tuple[str, int, int] | None = None,
    *,
    uris: UriPolicy | None = None,
) -> Record:
    """Turn a Kafka message (value, key, position) into a Record.

    A ``uri`` is read only where ``uris`` allows it (the default allows no file and no URL).
    Raises BadRecord(stage="validate") for invalid JSON, an invalid envelope (the message
    names the field) or a refused ``uri``, and BadRecord(stage="fetch") when a ``uri`` cannot
    be read.
    """
    record, uri = decode_envelope(value, key, position)
    return record if uri is None else read_uri(record, uri, uris or UriPolicy())


def decode_envelope(
    value: bytes | None,
    key: bytes | None,
    position: tuple[str, int, int] | None = None,
) -> tuple[Record, str | None]:
    """Validate a Kafka message and turn it into a Record, without reading a ``uri``: an
    upsert that names one comes back with no content, and the uri beside it (read it with
    :func:`read_uri`, under a time budget). Raises BadRecord(stage="validate")."""
    if value is None:
        return _tombstone(key, position), None
    try:
        raw = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRecord(f"record value is not valid UTF-8 JSON: {exc}", stage="validate") from exc
    except RecursionError as exc:  # json's decoder recurses per level ("[[[[...")
        raise BadRecord("record value is JSON nested too deeply to read", stage="validate") from exc
    if not isinstance(raw, dict):
        raise BadRecord(
            f"record value must be a JSON object, got {type(raw).__name__}", stage="validate"
        )
    try:
        env = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise BadRecord(f"invalid record envelope: {_describe(exc)}", stage="validate") from exc

    if key is not None and key.decode("utf-8", "replace") != env.source_id:
        log.warning("record key %r differs from source_id %r; using source_id", key, env.source_id)
    if env.op == "delete":
        return Record(
            source_id=env.source_id,
            op="delete",
            kind=env.kind,
            meta=dict(env.meta),
            ts=env.ts,
            position=position,
        ), None

    if env.content is not None:
        data = env.content.encode("utf-8")
    elif env.content_b64 is not None:
        data = _b64decode(env.content_b64)
    else:
        data = b""
    record = Record(
        source_id=env.source_id,
        op="upsert",
        kind=env.kind,
        content=data,
        meta=dict(env.meta),
        ts=env.ts,
        position=position,
    )
    return record, env.uri


def read_uri(record: Record, uri: str, uris: UriPolicy) -> Record:
    """``record`` with the bytes ``uri`` names as its content (where ``uris`` allows it),
    ``uri`` and ``filename`` in its meta, and its kind sniffed when it has none."""
    data, filename = uris.read(uri)
    meta = dict(record.meta)
    meta.setdefault("uri", uri)
    meta.setdefault("filename", filename)
    kind = record.kind if record.kind is not None else sniff_kind(data, filename)
    return dataclasses.replace(record, content=data, meta=meta, kind=kind)


def encode_record(record: Record) -> bytes:
    """The envelope for ``record`` as UTF-8 JSON: text as ``content``, binary as ``content_b64``."""
    env: dict[str, Any] = {"op": record.op, "source_id": record.source_id}
    if record.kind is not None:
        env["kind"] = record.kind
    if record.op == "upsert":
        text = None if record.kind in _BINARY_KINDS else _as_text(record.content)
        if text is not None:
            env["content"] = text
        else:
            env["content_b64"] = base64.b64encode(record.content).decode("ascii")
    env["meta"] = record.meta
    if record.ts is not None:
        env["ts"] = record.ts
    try:
        return json.dumps(env, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise BadRecord(
            f"record meta of {record.source_id!r} is not JSON-serialisable: {exc}", stage="encode"
        ) from exc


def record_from_path(
    path: Path, source_id: str | None = None, meta: dict[str, Any] | None = None
) -> Record:
    """A Record for a local file, its kind sniffed from its bytes and name.

    ``source_id`` defaults to the file's absolute path. A sidecar ``<name>.meta.json`` beside
    the file (for example ``{"caption": "..."}`` for an image) is merged into ``meta``;
    keys given in ``meta`` win.
    """
    path = Path(path)
    data = read_file(path)
    merged: dict[str, Any] = {"filename": path.name}
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if sidecar.is_file():
        try:
            extra = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadRecord(f"sidecar {sidecar} is not valid JSON: {exc}", stage="fetch") from exc
        if not isinstance(extra, dict):
            raise BadRecord(f"sidecar {sidecar} must hold a JSON object", stage="fetch")
        merged.update(extra)
    merged.update(meta or {})
    return Record(
        source_id=source_id or path.resolve().as_posix(),
        kind=sniff_kind(data, path.name),
        content=data,
        meta=merged,
    )


def is_sidecar(path: Path) -> bool:
    """True for a ``<name>.meta.json`` sidecar, which is metadata, not a source of its own."""
    return path.name.endswith(SIDECAR_SUFFIX)


def _tombstone(key: bytes | None, position: tuple[str, int, int] | None) -> Record:
    if not key:
        raise BadRecord(
            "tombstone (null value) without a key: no source_id to delete", stage="validate"
        )
    try:
        source_id = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"tombstone key is not UTF-8: {exc}", stage="validate") from exc
    return Record(source_id=source_id, op="delete", position=position)


# A JSON "\ud800" escape without its pair decodes to a lone surrogate: not a character, so
# not encodable as UTF-8 anywhere downstream.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 control characters and DEL.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _no_lone_surrogate(text: str) -> None:
    found = _LONE_SURROGATE.search(text)
    if found is not None:
        raise ValueError(
            f"holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x}) at character "
            f"{found.start()}: that is not Unicode text; send text as valid UTF-8 "
            "(surrogates only in pairs) or the bytes as content_b64")


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion (a scalar is 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > MAX_META_DEPTH:
                break
            stack.extend((v, level) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<envelope>"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord(f"content_b64: not valid base64: {exc}", stage="validate") from exc


def _as_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text
