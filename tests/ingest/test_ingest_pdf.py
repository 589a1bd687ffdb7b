from __future__ import annotations

import io
import time

import pytest

from kinject.demo_data import render_scanned_page
from kinject.errors import BadRecord, DependencyMissing
from kinject.ingest import ocr
from kinject.ingest.parsers import parse_documents
from kinject.ingest.pdf import parse_pdf
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Record

PAGES = (
    ("Tide almanac", "The spring tide at Brinmoor peaked at 4.7 metres on 3 March."),
    ("Keepers", "Gullspire light has been kept by Senna Calloway since 1998."),
)
SCANNED = (
    "HARBOUR NOTICE",
    "The spring tide peaked at 4.7 metres on Brinmoor.",
    "Observer: Lowenna Tresize",
)


def _text_pdf(pages: tuple[tuple[str, str], ...] = PAGES, **canvas_kwargs: object) -> bytes:
    """A real PDF with a text layer, one heading and one sentence per page (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, **canvas_kwargs)  # type: ignore[arg-type]
    c.setTitle("Brinmoor Almanac")
    for heading, sentence in pages:
        c.setFont("Helvetica-Bold", 16)
        c.drawString(72, 760, heading)
        c.setFont("Helvetica", 11)
        c.drawString(72, 730, sentence)
        c.showPage()
    c.save()
    return buf.getvalue()


def _scanned_pdf() -> bytes:
    """An image-only PDF (no text layer), as a scanner writes it: Pillow's PDF writer."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(render_scanned_page(SCANNED))).save(buf, "PDF")
    return buf.getvalue()


def _pdf_without_pages() -> bytes:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 3\n0000000000 65535 f \n"
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    return out + b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref


def test_text_pdf_gives_one_document_per_page() -> None:
    docs = parse_pdf(Record("pdf/almanac", content=_text_pdf(), meta={"filename": "a.pdf"}))
    assert [d.meta["page"] for d in docs] == [1, 2]
    assert all(d.meta["pages"] == 2 and d.meta["ocr"] is False for d in docs)
    for doc, (heading, sentence) in zip(docs, PAGES, strict=True):
        assert heading in doc.text and sentence in doc.text
    assert {d.title for d in docs} == {"Brinmoor Almanac"}  # from the PDF's metadata
    assert docs[0].doc_id != docs[1].doc_id


def test_pdf_end_to_end_is_sniffed_and_chunks_carry_page_numbers() -> None:
    out = ingest_record(Record("pdf/almanac", content=_text_pdf()), IngestConfig())
    assert {d.kind for d in out.documents} == {"pdf"}
    by_page = {c.meta["page"]: c.text for c in out.chunks}
    assert "Senna Calloway since 1998" in by_page[2]
    assert "4.7 metres" in by_page[1]
    assert by_page[1].startswith("Tide almanac")


@pytest.mark.slow
def test_scanned_pdf_page_is_read_with_ocr() -> None:
    pytest.importorskip("rapidocr")
    start = time.perf_counter()
    record = Record("pdf/scan", content=_scanned_pdf())
    out = ingest_record(record, IngestConfig(ocr_engine="rapidocr"))
    elapsed = time.perf_counter() - start
    text = "\n".join(c.text for c in out.chunks)
    assert "Lowenna Tresize" in text and "4.7 metres" in text, text
    assert out.documents[0].meta["ocr"] is True and out.documents[0].meta["page"] == 1
    assert elapsed < 60


def test_scanned_pdf_with_ocr_off_yields_nothing() -> None:
    out = ingest_record(Record("pdf/scan", content=_scanned_pdf()), IngestConfig(ocr_engine="none"))
    assert out.documents == [] and out.chunks == []


def test_scanned_pdf_without_engine_auto_skips_named_engine_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        ocr, "available_ocr_engines", lambda: {"rapidocr": False, "tesseract": False}
    )
    assert parse_pdf(Record("pdf/scan", content=_scanned_pdf()), ocr_engine="auto") == []
    with pytest.raises(DependencyMissing, match="tesseract"):
        parse_pdf(Record("pdf/scan", content=_scanned_pdf()), ocr_engine="tesseract")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.4\nthis is not a pdf body at all", "pdf is corrupt or unreadable"),
        (_text_pdf()[:200], "pdf is corrupt or unreadable"),
        (_pdf_without_pages(), "pdf has no pages"),
        (_text_pdf(encrypt="s3cret"), "pdf is encrypted and needs a password"),
    ],
    ids=["junk", "truncated", "zero-pages", "encrypted"],
)
def test_unreadable_pdfs_are_bad_records_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason) as info:
        ingest_record(Record("pdf/bad", content=data), IngestConfig(ocr_engine="none"))
    assert info.value.stage == "parse"


def test_pdf_through_the_parser_registry() -> None:
    docs = parse_documents(Record("pdf/almanac", content=_text_pdf()), "pdf")
    assert [d.meta["page"] for d in docs] == [1, 2]


def _blank_pdf(pages: int, scanned: bytes | None = None) -> bytes:
    """``pages`` blank pages without a text layer, every other one drawing nothing and the
    others holding the scan of a blank sheet, then one scanned page if given."""
    from PIL import Image
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    sheet = io.BytesIO()
    Image.new("L", (1240, 1754), 245).save(sheet, "PNG")
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for n in range(pages):
        if n % 2:
            c.drawImage(ImageReader(io.BytesIO(sheet.getvalue())), 0, 0, *A4)
        c.showPage()
    if scanned is not None:
        c.drawImage(ImageReader(io.BytesIO(scanned)), 36, 400, width=520, height=180)
        c.showPage()
    c.save()
    return buf.getvalue()


def test_blank_pages_are_not_handed_to_ocr() -> None:
    """The probe's blank 20-page PDF took 60 s: 3 s of OCR per blank page."""
    if not any(ocr.available_ocr_engines().values()):
        pytest.skip("no OCR engine installed")
    before = (ocr.stats.read, ocr.stats.blank)
    out = ingest_record(Record("pdf/blank", content=_blank_pdf(20)), IngestConfig())
    assert out.documents == []  # nothing to read, and nothing was read
    assert (ocr.stats.read, ocr.stats.blank) == (before[0], before[1] + 20)


@pytest.mark.slow
def test_only_the_page_with_ink_is_read_with_ocr() -> None:
    pytest.importorskip("rapidocr")
    before = (ocr.stats.read, ocr.stats.blank)
    pdf = _blank_pdf(20, scanned=render_scanned_page(SCANNED))
    out = ingest_record(Record("pdf/mostly-blank", content=pdf),
                        IngestConfig(ocr_engine="rapidocr"))
    assert [d.meta["page"] for d in out.documents] == [21]
    assert "Lowenna Tresize" in out.documents[0].text and out.documents[0].meta["ocr"] is True
    assert (ocr.stats.read, ocr.stats.blank) == (before[0] + 1, before[1] + 20)


def test_pdf_over_the_page_cap_is_refused_before_any_page_is_read() -> None:
    before = (ocr.stats.read, ocr.stats.blank)
    with pytest.raises(BadRecord, match=r"pdf has 30 pages, over the cap of 20 \(KINJECT_INGEST"
                       ) as info:
        ingest_record(Record("pdf/long", content=_blank_pdf(30)), IngestConfig(pdf_max_pages=20))
    assert info.value.stage == "parse"
    assert (ocr.stats.read, ocr.stats.blank) == before


# Printed lines of the Shared MIME-info Database specification 0.21 (shared-mime-info,
# /usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf; Thomas Leonard, GPL-2+), laid
# out as that PDF lays them: a running title at the top and a page number at the foot of
# every page, paragraphs broken at every printed line.
SPEC_PAGES = (
    ("1.2. What is this spec?",
     "Many programs and desktops use the MIME system[MIME] to represent the types of files. "
     "Frequently, it",
     "is necessary to work out the correct MIME type for a file. This is generally done by "
     "examining the file's",
     "name or contents, and looking up the correct MIME type in a database.",
     "It is also useful to store information about each type, such as a textual description "
     "of it, or a list of",
     "applications that can be used to view or edit files of that type."),
    ("update-mime-database is passed the mime directory containing the packages "
     "subdirectory which was",
     "modified as its only argument. It scans all the XML files in the packages subdirectory, "
     "combines the",
     "information in them, and creates a number of output files.",
     "The files created by update-mime-database are:",
     "• <MIME>/globs (contains a mapping from names to MIME types) [deprecated for globs2]",
     "• <MIME>/globs2 (contains a mapping from names to MIME types and glob weight)"),
    ("happens to use gzip to compress the file). The default priority value is 50, and the "
     "maximum is 100.",
     "Each match element has a number of attributes:",
     "• type: The type of the value to match against. This may be one of string, host16, "
     "host32, big16,",
     "big32, little16, little32 or byte."),
)


def _spec_pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for number, lines in enumerate(SPEC_PAGES, start=1):
        c.setFont("Helvetica", 9)
        c.drawString(72, 800, "Shared MIME-info Database")
        c.setFont("Helvetica", 8)
        for row, line in enumerate(lines):
            c.drawString(40, 760 - 14 * row, line)
        c.drawString(300, 40, str(number))
        c.showPage()
    c.save()
    return buf.getvalue()


def test_a_printed_pdf_reads_as_paragraphs_without_running_titles_and_page_numbers() -> None:
    docs = parse_pdf(Record("docs/spec.pdf", content=_spec_pdf()))
    assert [d.meta["page"] for d in docs] == [1, 2, 3]
    for doc in docs:
        assert "Shared MIME-info Database" not in doc.text
        assert not doc.text.rstrip()[-1].isdigit(), doc.text  # no page number at the foot
    first, second, third = (d.text.split("\n") for d in docs)
    assert first[0] == "1.2. What is this spec?"  # a heading keeps its own line
    assert first[1].startswith("Many programs") and first[1].endswith("in a database.")
    assert "Frequently, it is necessary to work out the correct MIME type" in first[1]
    assert first[2].endswith("view or edit files of that type.")
    assert second[1] == "The files created by update-mime-database are:"
    assert second[2].startswith("• <MIME>/globs (") and second[3].startswith("• <MIME>/globs2")
    assert "big16, big32, little16" in third[1]  # a list item runs on too


def test_no_chunk_of_a_printed_pdf_starts_in_the_middle_of_a_sentence() -> None:
    out = ingest_record(Record("docs/spec.pdf", content=_spec_pdf()),
                        IngestConfig(chunk_size=200, chunk_overlap=0))
    continued = ("is necessary", "name or contents", "applications that", "modified as",
                 "information in them", "big32")
    assert not [c.text[:40] for c in out.chunks if c.text.startswith(continued)]
