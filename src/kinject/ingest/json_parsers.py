"""JSON and JSON Lines: flattened into readable "path: value" lines, one Document per record."""

from __future__ import annotations

import json
from typing import Any

from kinject.errors import BadRecord
from kinject.ingest.parsers import decode_text, doc_id
from kinject.types import Document, Record

_TITLE_KEYS = ("title", "name", "id")


def parse_json(record: Record, kind: str) -> list[Document]:
    """JSON: an object becomes one Document, a list one Document per element.

    Nested objects are flattened into "path.to.field: value" lines; lists of scalars are
    written inline ("tags: a, b, c") and lists of objects by index ("staff[0].name: ...").
    An object that holds a list of records (``{"products": [{...}, {...}]}``, found in the
    object or up to two levels below it) gives one Document per record, read like the
    elements of a top-level list, and one more for the rest of the object, as XML's
    repeated elements do: a catalogue is not flattened into one text that a chunk boundary
    cuts through a product, whose fields then sit beside another product's.
    """
    try:
        value = json.loads(decode_text(record.content))
        if isinstance(value, list):
            return [d for i, item in enumerate(value) if (d := _json_doc(record, kind, item, i))]
        lists = _record_lists(value)
        if not lists:
            doc = _json_doc(record, kind, value, None)
            return [doc] if doc else []
        rest = _json_doc(record, kind, _without(value, {id(v) for v in lists}), None)
        items = [item for records in lists for item in records]
        # each record keeps a few of its parent's own lines ("company: Acme" above an
        # officer): "Who is Acme's CTO?" must still find the officer without the parent
        context = _context_lines(rest.text if rest else "")
        docs = [
            d
            for i, item in enumerate(items)
            if (d := _json_doc(record, kind, item, i, context))
        ]
    except ValueError as exc:
        raise BadRecord(f"json is malformed: {exc}", stage="parse") from exc
    except RecursionError as exc:  # decoding and flattening recurse once per level
        raise BadRecord("json is nested too deeply to read", stage="parse") from exc
    return [rest, *docs] if rest else docs


def _record_lists(value: Any) -> list[list[Any]]:
    """The lists of two or more objects nearest the top of a JSON object (three levels)."""
    level = [value] if isinstance(value, dict) else []
    for _ in range(3):
        found = [
            v
            for node in level
            for v in node.values()
            if isinstance(v, list) and len(v) >= 2 and all(isinstance(x, dict) for x in v)
        ]
        if found:
            return found
        level = [v for node in level for v in node.values() if isinstance(v, dict)]
    return []


def _without(value: Any, skip: set[int]) -> Any:
    """``value`` with the lists whose ids are in ``skip`` left out."""
    if not isinstance(value, dict):
        return value
    return {k: _without(v, skip) for k, v in value.items() if id(v) not in skip}


def _json_lines(text: str) -> list[str]:
    """JSON Lines are separated by "\n" (a "\r" before it is whitespace to JSON), not by
    every break ``str.splitlines`` knows: JSON allows raw U+2028, U+0085 inside a string."""
    return text.split("\n")


def parse_jsonl(record: Record, kind: str) -> list[Document]:
    """JSON lines: one Document per non-empty line, flattened like :func:`parse_json`."""
    docs = []
    for n, line in enumerate(_json_lines(decode_text(record.content)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            doc = _json_doc(record, kind, value, n)
        except ValueError as exc:
            raise BadRecord(f"jsonl line {n} is malformed: {exc}", stage="parse") from exc
        except RecursionError as exc:
            raise BadRecord(f"jsonl line {n} is nested too deeply to read", stage="parse") from exc
        if doc:
            docs.append(doc)
    return docs


def flatten_json(value: Any, prefix: str = "") -> list[str]:
    """Readable "path: value" lines for a JSON value (nulls and empty containers dropped)."""
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            lines.extend(flatten_json(v, f"{prefix}.{k}" if prefix else str(k)))
        return lines
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            items = [_scalar(v) for v in value if v is not None]
            return (
                [f"{prefix}: {', '.join(items)}" if prefix else ", ".join(items)] if items else []
            )
        lines = []
        for i, v in enumerate(value):
            lines.extend(flatten_json(v, f"{prefix}[{i}]"))
        return lines
    if value is None:
        return []
    return [f"{prefix}: {_scalar(value)}" if prefix else _scalar(value)]


def _context_lines(text: str, most: int = 3, chars: int = 200) -> str:
    """The first few short lines of a parent object, carried by each record it holds."""
    kept: list[str] = []
    for line in text.splitlines()[:most]:
        if sum(map(len, kept)) + len(line) > chars:
            break
        kept.append(line)
    return "\n".join(kept)


def _json_doc(
    record: Record, kind: str, value: Any, index: int | None, context: str = ""
) -> Document | None:
    text = "\n".join(flatten_json(value))
    if not text.strip():
        return None
    if context:
        text = f"{context}\n{text}"
    title = str(record.meta.get("title") or "")
    if isinstance(value, dict):
        title = next(
            (
                str(value[k])
                for k in _TITLE_KEYS
                if isinstance(value.get(k), str | int) and value.get(k) != ""
            ),
            title,
        )
    unit = "item" if index is not None else "file"
    meta = {**record.meta, "unit": unit}
    if index is not None:
        meta["item_index"] = index
    return Document(
        doc_id(record.source_id, f"item-{index}" if index is not None else ""),
        record.source_id,
        text,
        kind,
        title=title,
        meta=meta,
    )


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
