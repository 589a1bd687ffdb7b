from __future__ import annotations

import pytest

from kinject.ingest.chunking import chunk_document, split_text
from kinject.types import Document

EN = " ".join(f"Sentence number {i} talks about the lighthouse on island {i}." for i in range(40))
ZH = "".join(f"第{i}座灯塔位于第{i}号岛屿上，守塔人每天清晨点灯。" for i in range(40))


def _doc(text: str, **meta: object) -> Document:
    return Document("d1", "src/a", text, "text", meta=dict(meta))


def test_chunk_ids_are_stable_across_runs_and_differ_by_text() -> None:
    first = chunk_document(_doc(EN), 200, 20)
    again = chunk_document(_doc(EN), 200, 20)
    assert len(first) > 3
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert len({c.chunk_id for c in first}) == len(first)
    other = chunk_document(Document("d2", "src/b", EN, "text"), 200, 20)
    assert {c.chunk_id for c in first}.isdisjoint(c.chunk_id for c in other)


def test_english_chunks_end_at_sentence_breaks() -> None:
    chunks = chunk_document(_doc(EN), 200, 20)
    assert all(len(c.text) <= 200 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_chinese_chunks_end_at_chinese_sentence_enders() -> None:
    chunks = chunk_document(_doc(ZH), 100, 10)
    assert len(chunks) > 5
    assert all(c.text.endswith("。") and len(c.text) <= 100 for c in chunks)
    assert {c.lang for c in chunks} == {"zh"}


def test_small_row_stays_one_chunk_even_past_the_size() -> None:
    row = "Lighthouse: Gullspire. Keeper: Senna Calloway. Island: Brinmoor. First lit: 1902."
    chunks = chunk_document(_doc(row, unit="row"), 64, 8)
    assert len(chunks) == 1 and chunks[0].meta["unit"] == "row"
    assert len(chunk_document(_doc(row), 64, 8)) > 1


def test_repeated_text_gives_one_chunk() -> None:
    text = "Same paragraph here.\n\n" * 3
    assert len(chunk_document(_doc(text), 25, 0)) == 1


def test_bad_sizes_are_named() -> None:
    with pytest.raises(ValueError, match="overlap=50"):
        split_text(EN, 50, 50)


def test_every_chunk_of_a_section_starts_with_its_heading_path() -> None:
    from kinject.ingest.markup import parse_html
    from kinject.types import Record

    body = "".join(f"<p>{s}</p>" for s in EN.split(". "))
    page = (f"<html><body><h1>Lighthouses</h1><h2>Night shift</h2>{body}"
            "<h2>Day shift</h2><p>The keeper sleeps.</p></body></html>").encode()
    docs = parse_html(Record("kb/lights.html", kind="html", content=page))
    night = next(d for d in docs if d.meta["section"] == "Lighthouses > Night shift")
    chunks = chunk_document(night, 200, 20)
    assert len(chunks) > 3
    assert all(c.text.startswith("Lighthouses > Night shift: ") for c in chunks)
    assert all(len(c.text) <= 200 for c in chunks)
    assert all(c.meta["section"] == "Lighthouses > Night shift" for c in chunks)
    # the section's text, once each piece's heading is taken off, is all still there
    assert "island 39." in chunks[-1].text and "island 0\n" in chunks[0].text
    # a first block of several lines (a table, code) starts on the line after the path
    table = chunk_document(Document("d3", "src/c", "Ports:\nname: ssh. port: 22.\n"
                                    "name: http. port: 80.\n\n" + EN, "html",
                                    meta={"section": "Ports"}), 200, 20)
    assert table[0].text.startswith("Ports:\nname: ssh.")
    assert all(c.text.startswith("Ports:") for c in table)


def test_a_document_that_is_no_section_gets_no_heading() -> None:
    chunks = chunk_document(_doc(EN, section="Elsewhere"), 200, 20)  # text lacks its path
    assert not any(c.text.startswith("Elsewhere") for c in chunks)


def _services(n: int) -> str:
    return "".join(f"<tr><td>svc{i}</td><td>{1000 + i}</td><td>runs task {i} on the host</td></tr>"
                   for i in range(n))


def _service_table(caption: str, n: int) -> str:
    return (f"<table><caption>{caption}</caption><tr><th>Service</th><th>Port</th>"
            f"<th>Use</th></tr>{_services(n)}</table>")


def test_every_chunk_of_a_long_html_table_starts_with_its_caption() -> None:
    from kinject.ingest.markup import parse_html
    from kinject.types import Record

    page = (f"<html><body><h1>Hosts</h1><p>{EN[:300]}</p>"
            f"{_service_table('Services of the gateway', 40)}<p>The end.</p></body></html>")
    doc = parse_html(Record("kb/hosts.html", kind="html", content=page.encode()))[0]
    chunks = chunk_document(doc, 300, 30)
    rows = [c for c in chunks if "Service: svc" in c.text]
    assert len(rows) > 3
    assert all(c.text.startswith("Hosts:\nServices of the gateway\nService: svc") for c in rows)
    assert all(len(c.text) <= 300 for c in chunks)
    assert "Port: 1039." in rows[-1].text
    # every row is still there, each whole, under the caption
    found = {line for c in rows for line in c.text.split("\n") if line.startswith("Service:")}
    assert len(found) == 40
    assert chunks[-1].text == "Hosts: The end."


def test_a_short_table_is_chunked_as_before() -> None:
    from kinject.ingest.chunking import split_text
    from kinject.ingest.markup import parse_html
    from kinject.types import Record

    page = (f"<html><body><p>{EN[:400]}</p>{_service_table('Services of the gateway', 2)}"
            f"<p>{EN[400:900]}</p></body></html>")
    doc = parse_html(Record("kb/short.html", kind="html", content=page.encode()))[0]
    assert [c.text for c in chunk_document(doc, 300, 30)] == split_text(doc.text, 300, 30)


def test_every_chunk_of_a_long_markdown_table_has_its_heading_and_header_row() -> None:
    text = ("# Network\n\nSome words first.\n\n## Services of the gateway\n\n"
            "| Service | Port |\n|---|---|\n"
            + "".join(f"| svc{i} | {1000 + i} |\n" for i in range(40)) + "\nThe end.\n")
    chunks = chunk_document(Document("d1", "src/a.md", text, "markdown"), 200, 0)
    rows = [c for c in chunks if "| svc" in c.text]
    assert len(rows) > 3
    assert all(c.text.startswith("## Services of the gateway\n| Service | Port |\n|---|---|\n")
               for c in rows)
    assert "| svc39 | 1039 |" in rows[-1].text
    assert all(c.text.count("| Service | Port |") == 1 for c in rows)
    assert all("| svc" in c.text for c in chunks if "Services of the gateway" in c.text)
    assert all(len(c.text) <= 200 for c in chunks)


def test_a_long_table_title_takes_a_bounded_share_of_each_chunk() -> None:
    title = "Services " + " ".join(f"word{i}" for i in range(25))  # 160 characters
    text = title + "\n" + "\n".join(f"Service: svc{i}. Port: {1000 + i}." for i in range(60))
    chunks = chunk_document(_doc(text), 200, 0)
    assert len(chunks) > 3
    heads = {c.text.split("\n", 1)[0] for c in chunks[1:]}
    assert len(heads) == 1
    head = heads.pop()
    assert head.startswith("Services word0 word1") and head.endswith("…")
    assert len(head) <= 200 * 0.3
    assert all(len(c.text) <= 200 for c in chunks)
