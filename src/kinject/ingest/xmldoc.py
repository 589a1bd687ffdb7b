"""XML: parsed safely with defusedxml and flattened into readable "path.to.field: value" lines.

Repeated record-like elements (``<items><item>...</item>...</items>``) become one Document
each, like a JSON list; whatever else their parent holds becomes one more Document. Entity
declarations, external entities and external DTDs are refused before anything is expanded,
so an entity bomb costs neither time nor memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kinject.errors import BadRecord
from kinject.ingest.parsers import doc_id
from kinject.types import Document, Record

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

_TITLE_KEYS = ("title", "name", "id")
_MAX_DEPTH = 200


def parse_xml(record: Record, kind: str = "xml") -> list[Document]:
    """One Document per repeated record element (or one for the whole file).

    Entity declarations (the "billion laughs" bomb), external entities and external DTDs are
    refused with BadRecord(stage="parse") before anything is expanded.
    """
    import defusedxml
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(record.content, forbid_dtd=False, forbid_entities=True)
    except defusedxml.EntitiesForbidden as exc:
        what = (
            f"external entity {exc.name!r} ({exc.sysid})" if exc.sysid else (f"entity {exc.name!r}")
        )
        raise BadRecord(
            f"xml rejected: it declares {what}; entity declarations are refused "
            "(they allow entity-expansion bombs and reading external files)",
            stage="parse",
        ) from exc
    except defusedxml.DefusedXmlException as exc:
        raise BadRecord(f"xml rejected: {exc}", stage="parse") from exc
    except ParseError as exc:
        raise BadRecord(f"xml is malformed: {exc}", stage="parse") from exc
    records = _record_elements(root)
    skip = {id(r) for r in records}
    units: list[tuple[Element, list[str], int | None]] = [
        (root, _flatten(root, _local(root.tag), skip=skip), None)
    ]
    units += [(el, _flatten(el, _local(el.tag)), i) for i, el in enumerate(records)]
    units = [u for u in units if u[1]]
    if not units:
        raise BadRecord("xml has no text or attribute values", stage="parse")
    default_title = str(record.meta.get("title") or record.meta.get("filename") or "")
    docs = []
    for el, lines, index in units:
        meta = {**record.meta, "unit": "file" if index is None else "item"}
        if index is not None:
            meta["item_index"] = index
        docs.append(
            Document(
                doc_id(record.source_id, "" if index is None else f"item-{index}"),
                record.source_id,
                "\n".join(lines),
                kind,
                title=_xml_title(el) or default_title,
                meta=meta,
            )
        )
    return docs


def _record_elements(root: Element) -> list[Element]:
    """The repeated record-like children (``<items><item/>...``) nearest the root, if any.

    Looked for in the root and the two levels below it (``<rss><channel><item/>...``), so
    a repeated field deep inside one record does not split the file. Record-like means
    having child elements or attributes.
    """
    level = [root]
    for _ in range(3):
        for node in level:
            counts: dict[str, int] = {}
            for child in node:
                if len(child) or child.attrib:
                    counts[_local(child.tag)] = counts.get(_local(child.tag), 0) + 1
            tag = max(counts, key=lambda t: counts[t], default=None)
            if tag is not None and counts[tag] >= 2:
                return [c for c in node if _local(c.tag) == tag and (len(c) or c.attrib)]
        level = [child for node in level for child in node]
    return []


def _flatten(
    el: Element, path: str, depth: int = 0, skip: set[int] | frozenset[int] = frozenset()
) -> list[str]:
    """Readable "path.to.field: value" lines; attributes as ``path@attr``.

    Repeated leaf children are listed inline (``tags.tag: a, b``), repeated complex ones
    by index (``staff[0].name: ...``); mixed content (text with inline tags) reads as prose.
    """
    if depth > _MAX_DEPTH:
        raise BadRecord(f"xml is nested deeper than {_MAX_DEPTH} levels", stage="parse")
    lines = [f"{path}@{_local(k)}: {_words(v)}" for k, v in el.attrib.items() if _words(v)]
    children = [c for c in el if id(c) not in skip]
    text = _words(" ".join([el.text or "", *(c.tail or "" for c in children)]))
    if children and text and all(not len(c) and not c.attrib for c in children):
        return [*lines, f"{path}: {_words(''.join(el.itertext()))}"]  # mixed content: prose
    if text:
        lines.append(f"{path}: {text}")
    groups: dict[str, list[Element]] = {}
    for child in children:
        groups.setdefault(_local(child.tag), []).append(child)
    for tag, members in groups.items():
        if len(members) == 1:
            lines.extend(_flatten(members[0], f"{path}.{tag}", depth + 1, skip))
        elif all(not len(m) and not m.attrib for m in members):
            values = [v for m in members if (v := _words(m.text or ""))]
            if values:
                lines.append(f"{path}.{tag}: {', '.join(values)}")
        else:
            for i, m in enumerate(members):
                lines.extend(_flatten(m, f"{path}.{tag}[{i}]", depth + 1, skip))
    return lines


def _xml_title(el: Element) -> str:
    for key in _TITLE_KEYS:
        if value := _words(el.get(key, "")):
            return value
        child = next((c for c in el if _local(c.tag) == key), None)
        if child is not None and (value := _words("".join(child.itertext()))):
            return value
    return ""


def _local(tag: str) -> str:
    """``{namespace}name`` -> ``name``."""
    return tag.rsplit("}", 1)[-1]


def _words(text: str) -> str:
    return " ".join(text.split())
