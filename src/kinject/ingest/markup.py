"""HTML and XML: readable Documents from markup (XML itself lives in :mod:`.xmldoc`).

HTML loses its boilerplate (scripts, navigation, headers, footers, forms, ...) and keeps its
headings as structure: one Document per section, whose text starts with the heading path
("Install > Linux: ..."). Every pass over the tree is linear in its size and none recurses
past ``max_depth``: a page larger than ``max_bytes`` is refused, and elements nested deeper
than ``max_depth`` are flattened into the plain text of their ancestor at that depth, as
browsers do past their own limit (Blink: 512), so a hostile page of 100,000 nested ``<div>``s
parses in about two seconds and keeps its text. XML is parsed with defusedxml (no entity
expansion, no external references) and flattened into "path.to.field: value" lines, one
Document per repeated record-like element, like a JSON list.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import TYPE_CHECKING

from kinject.errors import BadRecord
from kinject.ingest.codeblocks import fence
from kinject.ingest.parsers import doc_id
from kinject.ingest.xmldoc import parse_xml
from kinject.types import Document, Record

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bs4 import BeautifulSoup, Tag

__all__ = ["parse_html", "parse_xml"]

log = logging.getLogger(__name__)

BOILERPLATE = (
    "script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg",
    "canvas", "button", "select", "footer", "header", "head", "object", "embed",
)  # fmt: skip
_BOILERPLATE_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search"}
# Chrome that documentation generators mark by class rather than by element: DocBook's
# tables of contents and prev/next bars (Debian Reference, the Linux man pages' HTML),
# Sphinx's and MkDocs' permalink pilcrows after every heading ("Introduction ¶").
_BOILERPLATE_CLASSES = frozenset({
    "toc", "list-of-tables", "list-of-figures", "list-of-examples", "navheader", "navfooter",
    "headerlink",
})  # fmt: skip
_SPACE_RUN = re.compile(r"\s+")
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
# Real pages nest a few dozen levels deep; past this, structure is flattened into text.
MAX_DEPTH = 256
# A long single-page manual is a few MB of HTML; parsing one costs about a second per MB.
MAX_BYTES = 8 * 1024 * 1024
_BLOCKS = {
    "p", "div", "section", "article", "main", "body", "blockquote", "figure", "figcaption",
    "dl", "dt", "dd", "address", "details", "summary", "center", "html", "hr", "li",
}  # fmt: skip
# Classes of a block that titles the next one: DocBook's table, figure and example titles,
# Sphinx's "Note" / "Warning" heads of an admonition.
_TITLES = frozenset({"title", "admonition-title"})
# Elements that part the words around them even in text read as one line (see _text).
_SPACED = _BLOCKS | {"br", "td", "th", "tr", "ul", "ol", "table", "pre", "tbody", "thead",
                     "caption", *_HEADINGS}


def parse_html(record: Record, kind: str = "html", *, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> list[Document]:
    """One Document per heading section; BadRecord(stage="parse") when no text is visible
    or the page is larger than ``max_bytes``. Elements deeper than ``max_depth`` are read as
    the plain text of their ancestor at that depth."""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    if len(record.content) > max_bytes:
        raise BadRecord(f"html of {len(record.content):,} bytes is over the cap of "
                        f"{max_bytes:,} bytes (KINJECT_INGEST__HTML_MAX_BYTES)", stage="parse")
    # Bytes, not text: BeautifulSoup honours the page's own <meta charset> and BOMs. XHTML
    # (an <?xml ...?> prolog, as DocBook writes) is HTML to read, not a mistake to warn of.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(record.content, "lxml")
    if "\x00" in soup.get_text():
        raise BadRecord("html looks binary (contains NUL characters)", stage="parse")
    title = _html_title(soup)
    _strip_boilerplate(soup)
    if (flattened := _flatten_below(soup, max_depth)):
        log.info("html %s: %d element(s) nested deeper than %d levels read as plain text",
                 record.source_id, flattened, max_depth)
    sections: list[tuple[str, list[str]]] = []
    for root in _content_roots(soup):
        sections = _Sections().render(root)
        if any(blocks for _, blocks in sections):
            break
    kept = [(path, blocks) for path, blocks in sections if blocks]
    if not kept:  # headings alone are still visible text
        kept = [(path, []) for path, _ in sections if path]
    if not kept:
        raise BadRecord(
            "html has no visible text (after removing scripts, styles, navigation, headers, "
            "footers and forms)",
            stage="parse",
        )
    title = str(record.meta.get("title") or title or record.meta.get("filename") or "")
    docs = []
    for n, (path, blocks) in enumerate(kept, start=1):
        meta = {**record.meta, "unit": "section", "section": path, "section_index": n}
        docs.append(
            Document(
                doc_id(record.source_id, f"section-{n}"),
                record.source_id,
                _section_text(path, blocks),
                kind,
                title=title,
                meta=meta,
            )
        )
    return docs


def _html_title(soup: BeautifulSoup) -> str:
    for tag in (soup.title, soup.find("h1")):
        if tag is not None and (text := _text(tag)):
            return text
    return ""


def _strip_boilerplate(soup: BeautifulSoup) -> None:
    """Remove scripts, navigation, chrome and hidden elements, in one pass over the tree.

    An explicit stack, not recursion, and no per-tag searches: a removed element's subtree
    is never visited, and whether an element lies inside an <article> travels down with it.
    """
    from bs4 import Comment, Tag
    from bs4.element import PreformattedString

    for junk in soup.find_all(string=lambda s: isinstance(s, PreformattedString | Comment)):
        junk.extract()
    doomed: list[Tag] = []
    stack: list[tuple[Tag, bool]] = [(soup, False)]
    while stack:
        parent, in_article = stack.pop()
        for tag in parent.contents:
            if not isinstance(tag, Tag):
                continue
            name = tag.name
            # an article's own header holds its title and byline
            keep_header = name == "header" and in_article
            hidden = tag.has_attr("hidden") or str(tag.get("aria-hidden", "")).lower() == "true"
            chrome = not _BOILERPLATE_CLASSES.isdisjoint(tag.get_attribute_list("class"))
            if not keep_header and (name in BOILERPLATE or hidden or chrome
                                    or tag.get("role") in _BOILERPLATE_ROLES):
                doomed.append(tag)
            else:
                stack.append((tag, in_article or name == "article"))
    for tag in doomed:
        tag.decompose()


def _flatten_below(soup: BeautifulSoup, max_depth: int) -> int:
    """Replace the children of every element at ``max_depth`` by their plain text; returns
    how many elements were flattened. Linear: each subtree is read once, by the iterative
    ``get_text``, and the walk never goes below ``max_depth``."""
    from bs4 import Tag

    flattened = 0
    stack: list[tuple[Tag, int]] = [(soup, 0)]
    while stack:
        node, depth = stack.pop()
        for tag in node.contents:
            if not isinstance(tag, Tag):
                continue
            if depth + 1 < max_depth:
                stack.append((tag, depth + 1))
            elif any(isinstance(c, Tag) for c in tag.contents):
                text = tag.get_text(" ")
                tag.clear()
                tag.append(text)
                flattened += 1
    return flattened


def _content_roots(soup: BeautifulSoup) -> Iterator[Tag]:
    """Where the content is, best guess first: <main>, then the <article>s, then <body>."""
    from bs4 import Tag

    main = soup.find("main") or soup.find(None, {"role": "main"})
    if isinstance(main, Tag):
        yield main
    articles = _outermost(soup, "article")
    if articles:  # several posts on one page: read them all, in order
        wrapper = soup.new_tag("div")
        wrapper.extend([a.extract() for a in articles])
        yield wrapper
    yield soup.body if isinstance(soup.body, Tag) else soup


def _outermost(root: Tag, name: str) -> list[Tag]:
    """The ``name`` elements not inside another one, in document order (one pass)."""
    from bs4 import Tag

    found: list[Tag] = []
    stack: list[Tag] = [root]
    while stack:
        node = stack.pop()
        if node is not root and node.name == name:
            found.append(node)
            continue
        stack.extend(tag for tag in reversed(node.contents) if isinstance(tag, Tag))
    return found


class _Sections:
    """Walks an HTML tree into (heading path, blocks) sections, in document order."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.sections: list[tuple[str, list[str]]] = [("", [])]
        self.inline: list[str] = []
        # The next block belongs with the last one: a term and its description (<dt>,
        # <dd>: a Sphinx signature and what it does), a DocBook title and its table, a
        # line ending in ":" and the code it introduces. Joined by one newline, they stay
        # in one chunk where they fit, as the chunker splits at blank lines first.
        self.glue = False

    def render(self, root: Tag) -> list[tuple[str, list[str]]]:
        self._walk(root)
        self._flush()
        return self.sections

    def _walk(self, node: Tag) -> None:
        from bs4 import NavigableString, Tag

        for child in node.children:
            if isinstance(child, NavigableString):
                self.inline.append(_SPACE_RUN.sub(" ", str(child)))  # only <br> breaks lines
            elif not isinstance(child, Tag):
                continue
            elif child.name in _HEADINGS:
                self._heading(_HEADINGS[child.name], _text(child))
            elif child.name in ("ul", "ol"):
                self._block(_render_list(child))
            elif child.name == "table":
                self._block(_render_table(child))
            elif child.name == "pre":  # code, a transcript: kept as laid out, fenced
                if (code := child.get_text().strip("\n")).strip():
                    self._block(fence(code.rstrip()))
            elif child.name == "br":
                self.inline.append("\n")
            elif child.name in _BLOCKS:
                self._flush()
                self._walk(child)
                self._flush()
                if child.name == "dt" or not _TITLES.isdisjoint(child.get_attribute_list("class")):
                    self.glue = True
            else:
                self._walk(child)

    def _heading(self, level: int, text: str) -> None:
        self._flush()
        self.glue = False
        if not text:
            return
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.sections.append((" > ".join(t for _, t in self.stack), []))

    def _block(self, text: str) -> None:
        self._flush()
        if text.strip():
            self._add(text)

    def _flush(self) -> None:
        lines = [_words(line) for line in "".join(self.inline).split("\n")]
        self.inline = []
        if text := "\n".join(line for line in lines if line):
            self._add(text)

    def _add(self, text: str) -> None:
        blocks = self.sections[-1][1]
        if self.glue and blocks:
            blocks[-1] += "\n" + text
        else:
            blocks.append(text)
        self.glue = text.endswith((":", "："))


def _render_list(tag: Tag, depth: int = 0) -> str:
    from bs4 import Tag

    lines = []
    items = [li for li in tag.find_all("li", recursive=False) if isinstance(li, Tag)]
    for n, li in enumerate(items, start=1):
        nested = [sub.extract() for sub in li.find_all(["ul", "ol"])]
        marker = f"{n}." if tag.name == "ol" else "-"
        if text := _text(li):
            lines.append(f"{'  ' * depth}{marker} {text}")
        lines.extend(_render_list(sub, depth + 1) for sub in nested if isinstance(sub, Tag))
    return "\n".join(line for line in lines if line)


def _render_table(table: Tag) -> str:
    """Rows as "Header: value. Header: value." lines, like CSV rows; headerless as "a | b"."""
    rows = [
        [_text(cell) for cell in tr.find_all(["th", "td"])]
        for tr in table.find_all("tr")
        if tr.find_parent("table") is table
    ]
    rows = [r for r in rows if any(r)]
    if not rows:
        return ""
    first = table.find("tr")
    has_header = first is not None and not first.find("td") and len(rows) > 1
    lines = []
    caption = table.find("caption")
    if caption is not None and (text := _text(caption)):
        lines.append(text)
    if not has_header:
        return "\n".join(lines + [" | ".join(c for c in r if c) for r in rows])
    header = [h or f"column {i + 1}" for i, h in enumerate(rows[0])]
    for cells in rows[1:]:
        labels = header + [f"column {i + 1}" for i in range(len(header), len(cells))]
        pairs = [f"{k}: {_end(v)}" for k, v in zip(labels, cells, strict=False) if v]
        lines.append(" ".join(pairs))
    return "\n".join(lines)


def _section_text(path: str, blocks: list[str]) -> str:
    if not path:
        return "\n\n".join(blocks)
    if not blocks:
        return path
    sep = "\n" if "\n" in blocks[0] else " "
    return f"{path}:{sep}" + "\n\n".join(blocks)


def _words(text: str) -> str:
    return " ".join(text.split())


def _text(tag: Tag) -> str:
    """The text of ``tag`` as a browser lays it out on one line: inline elements join their
    neighbours as they are ("<code>/etc/fstab</code>" inside quotes stays '"/etc/fstab"',
    "<b>apt</b>(8)" stays "apt(8)"), and only block elements and <br> part words. One pass,
    no recursion (the tree is at most ``max_depth`` deep, but a list may be long)."""
    from bs4 import NavigableString, PageElement, Tag

    parts: list[str] = []
    stack: list[PageElement | None] = [tag]
    while stack:
        node = stack.pop()
        if node is None:  # the end of a block
            parts.append(" ")
        elif isinstance(node, NavigableString):
            parts.append(str(node))
        elif isinstance(node, Tag):
            if node is not tag and (node.name in _SPACED):
                parts.append(" ")
                stack.append(None)
            stack.extend(reversed(node.contents))
    return _words("".join(parts))


def _end(value: str) -> str:
    return value if value.endswith((".", "!", "?", "。", "！", "？")) else f"{value}."
