"""PDF: one Document per page, from the text layer or, for scanned pages, from OCR.

PDFium (through pypdfium2) is not thread-safe, so every call into it holds one lock; OCR of
a rendered page runs outside the lock. Every PDFium object is closed, also on errors.

A PDF of more than ``max_pages`` pages is refused before any page is read (376 KB can hold
3,000 blank pages), and a rendered page that is blank is never handed to OCR (a blank page
cost 3 s of OCR; its pixel statistics cost a few milliseconds).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from typing import TYPE_CHECKING

from kinject.errors import BadRecord, DependencyMissing
from kinject.ingest import ocr
from kinject.ingest.ocr import ocr_image
from kinject.ingest.parsers import doc_id
from kinject.types import Document, Record

if TYPE_CHECKING:
    from PIL.Image import Image
    from pypdfium2 import PdfDocument, PdfPage

log = logging.getLogger(__name__)

# Pages without a text layer are rendered for OCR at the resolution of the scan they hold
# (at most 4x, 288 dpi), at 2x (144 dpi) when they hold no image, and never past this many
# pixels on the longer side.
RENDER_SCALE = 2.0
MAX_SCAN_SCALE = 4.0
MAX_RENDER_SIDE = 2500
# Text-layer pages read at about 500 a second here (40 lines each); a page without one is
# rendered (15 ms) and read with OCR (seconds) unless blank. Long manuals run to a few
# hundred pages; a 2,000-page text PDF parses in about 4 s.
MAX_PAGES = 2000
_PDFIUM_LOCK = threading.RLock()
# Running titles and page numbers sit within this many lines of a page's top or bottom.
_EDGE_LINES = 2
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"(?:page\s*)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?|[-–]\s*\d{1,4}\s*[-–]",
                          re.IGNORECASE)
# A printed line at least this share of a full line (the 80th percentile of the document's
# line lengths) runs on into the next; documents of fewer lines are left as they are.
_RUN_ON = 0.75
_MIN_LINES_TO_REFLOW = 5
# A bullet, "1." / "(a)" items and numbered headings ("2.1. Directory layout") start a line.
_STARTS_ITEM = re.compile(
    r"[•◦▪‣●○■□*–-]\s|\(?[0-9]{1,3}[.)]\s|\(?[a-z][.)]\s|[0-9]+(\.[0-9]+)+\.?\s")
_CJK_END = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]$")
_CJK_START = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_NO_KIDS = re.compile(rb"/Count\s+0(?![0-9])")


def parse_pdf(record: Record, kind: str = "pdf", ocr_engine: str = "auto", *,
              max_pages: int = MAX_PAGES) -> list[Document]:
    """One Document per page with text; ``meta["page"]`` is 1-based.

    Pages without a text layer are rendered and, unless blank, read with OCR (``ocr_engine``);
    with ``"none"``, or ``"auto"`` and no engine installed, they yield nothing. A PDF that is
    corrupt, encrypted with a password, has no pages or more than ``max_pages`` raises
    BadRecord(stage="parse").
    """
    pdf = _open(record.content)
    try:
        with _PDFIUM_LOCK:
            pages = len(pdf)
            pdf_title = _metadata_title(pdf)
        if pages == 0:
            raise BadRecord("pdf has no pages", stage="parse")
        if pages > max_pages:
            raise BadRecord(f"pdf has {pages:,} pages, over the cap of {max_pages:,} "
                            "(KINJECT_INGEST__PDF_MAX_PAGES)", stage="parse")
        title = str(record.meta.get("title") or pdf_title or record.meta.get("filename") or "")
        read = [(number, *_page_text(pdf, number, ocr_engine))
                for number in range(1, pages + 1)]
        layer = [lines for lines in (_lines(text) for _, text, by_ocr in read if not by_ocr)]
        running = _running_lines(layer)
        full = _full_width([len(line) for lines in layer for line in lines if line])
        docs: list[Document] = []
        for number, text, by_ocr in read:
            if not by_ocr:
                text = _reflow(_strip_running(_lines(text), running), full)
            if not text.strip():
                continue
            meta = {
                **record.meta,
                "unit": "page",
                "page": number,
                "pages": pages,
                "pdf_title": pdf_title,
                "ocr": by_ocr,
            }
            docs.append(
                Document(
                    doc_id(record.source_id, f"page-{number}"),
                    record.source_id,
                    text,
                    kind,
                    title=title,
                    meta=meta,
                )
            )
    finally:
        with _PDFIUM_LOCK:
            pdf.close()
    log.debug("pdf %s: %d pages, %d with text", record.source_id, pages, len(docs))
    return docs


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def _line_key(line: str) -> str:
    """A line with its numbers masked: "Page 3 of 17" and "Page 4 of 17" are one line."""
    return _DIGITS.sub("#", line.lower())


def _running_lines(pages: list[list[str]]) -> tuple[set[str], set[str]]:
    """Keys of the lines that head or foot at least half of the text-layer pages (and three):
    running titles and page numbers, printed on every page and part of no paragraph."""
    need = max(3, (len(pages) + 1) // 2)
    heads: Counter[str] = Counter()
    feet: Counter[str] = Counter()
    for lines in pages:
        kept = [line for line in lines if line]
        heads.update({_line_key(line) for line in kept[:_EDGE_LINES]})
        feet.update({_line_key(line) for line in kept[-_EDGE_LINES:]})
    return ({k for k, n in heads.items() if n >= need},
            {k for k, n in feet.items() if n >= need})


def _strip_running(lines: list[str], running: tuple[set[str], set[str]]) -> list[str]:
    heads, feet = running
    kept = [line for line in lines if line]
    for _ in range(_EDGE_LINES):
        if kept and _line_key(kept[0]) in heads:
            kept.pop(0)
        if kept and _line_key(kept[-1]) in feet:
            kept.pop()
    if kept and _PAGE_NUMBER.fullmatch(kept[-1]):  # a lone page number at the foot
        kept.pop()
    return kept


def _full_width(widths: list[int]) -> int:
    """Characters in a full printed line of the document (the 80th percentile of its lines'
    lengths); 0 when it has too few lines to tell."""
    if len(widths) < _MIN_LINES_TO_REFLOW:
        return 0
    return sorted(widths)[int(len(widths) * 0.8)]


def _reflow(lines: list[str], full: int) -> str:
    """A page's lines as paragraphs, one per line: the text layer breaks every printed line,
    so a chunk would start mid-sentence ("is necessary to work out..."). A line runs on into
    the next when it is about as long as a full line of the document (``full`` characters)
    and the next does not start a list item; a short line (a heading, a paragraph's last
    line) ends its paragraph."""
    lines = [line for line in lines if line]
    if not lines:
        return ""
    paragraphs: list[str] = [lines[0]]
    for prev, line in zip(lines, lines[1:], strict=False):
        if full and len(prev) >= _RUN_ON * full and not _STARTS_ITEM.match(line):
            last = paragraphs[-1]
            cjk = _CJK_END.search(last) and _CJK_START.match(line)
            glue = "" if cjk or last.endswith("-") else " "
            paragraphs[-1] = last + glue + line
        else:
            paragraphs.append(line)
    return "\n".join(paragraphs)


def _open(data: bytes) -> PdfDocument:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        with _PDFIUM_LOCK:
            return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # The page check comes first: PDFium can leave the previous document's error code
        # (a password error) when it refuses a document without pages.
        if _NO_KIDS.search(data) and not _PAGE_OBJECT.search(data):
            reason = "pdf has no pages"  # PDFium refuses to open a document without pages
        elif exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            reason = "pdf is encrypted and needs a password"
        else:
            reason = f"pdf is corrupt or unreadable: {exc}"
        raise BadRecord(reason, stage="parse") from exc


def _metadata_title(pdf: PdfDocument) -> str:
    try:
        return " ".join(str(pdf.get_metadata_value("Title")).split())
    except Exception:  # a broken info dictionary is no reason to lose the pages
        return ""


def _page_text(pdf: PdfDocument, number: int, ocr_engine: str) -> tuple[str, bool]:
    """The page's text layer, or its OCR text when it has none; (text, came_from_ocr)."""
    import pypdfium2 as pdfium

    try:
        with _PDFIUM_LOCK:
            page = pdf[number - 1]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
                image = (None if text.strip() or ocr_engine == "none" or _empty(page, number)
                         else _render(page))
            finally:
                page.close()
    except pdfium.PdfiumError as exc:
        raise BadRecord(f"pdf page {number} cannot be read: {exc}", stage="parse") from exc
    if image is None:
        if not text.strip():
            log.info("pdf page %d has no text layer and OCR is off; skipped", number)
        return text, False
    try:
        return ocr_image(image, ocr_engine), True
    except DependencyMissing:
        if ocr_engine != "auto":
            raise
        log.warning("pdf page %d has no text layer and no OCR engine is installed", number)
        return "", False


def _empty(page: PdfPage, number: int) -> bool:
    """True for a page that draws nothing at all: blank without rendering it."""
    if next(iter(page.get_objects(max_depth=1)), None) is not None:
        return False
    ocr.stats.blank += 1
    log.debug("pdf page %d draws nothing; not read", number)
    return True


def _render(page: PdfPage) -> Image:
    """The page as a greyscale image, for OCR (called with the PDFium lock held).

    A scanned page is rendered at the resolution of the scan it holds: resampling it up
    or down costs OCR accuracy (spaces between words are the first thing lost).
    """
    import pypdfium2.raw as pdfium_c

    width, height = page.get_size()
    scale = RENDER_SCALE
    images = list(page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=1))
    if images:
        px_width = max(img.get_px_size()[0] for img in images)
        scale = min(max(px_width / max(width, 1.0), 1.0), MAX_SCAN_SCALE)
    scale = min(scale, MAX_RENDER_SIDE / max(width, height, 1.0))
    bitmap = page.render(scale=scale, grayscale=True)
    try:
        return bitmap.to_pil().copy()  # its own pixels: the bitmap's buffer is freed below
    finally:
        bitmap.close()
