from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from kinject.errors import BadRecord
from kinject.ingest.markup import parse_html, parse_xml
from kinject.ingest.parsers import parse_documents
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Record

# A page as a CMS writes it: site chrome around one article.
BLOG_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8"><title>Installing Kinject &ndash; Brinmoor Docs</title>
<style>body { font-family: serif; } .hidden-style-text { display: none }</style>
<script>window.dataLayer = ["SCRIPT_TRACKING_ID"];</script>
</head><body>
<header class="site"><a href="/">Brinmoor Docs</a> <span>SITE_BANNER_TEXT</span></header>
<nav><ul><li><a href="/">NAV_HOME</a></li><li><a href="/blog">NAV_BLOG</a></li></ul></nav>
<div id="cookie" role="dialog" hidden>COOKIE_BANNER_TEXT</div>
<main>
  <article>
    <h1>Install</h1>
    <p>Kinject runs on&nbsp;any machine with Python&nbsp;3.11 &mdash; no GPU needed.</p>
    <!-- EDITOR_COMMENT: check this paragraph -->
    <h2>Linux</h2>
    <p>Install it with   <code>pip install kinject</code>
       and start the worker.</p>
    <ol><li>Create a virtual environment.</li><li>Install the package.</li></ol>
    <h2>Tide tables</h2>
    <table>
      <caption>Spring tides at the harbours</caption>
      <thead><tr><th>Harbour</th><th>Height</th><th>Keeper</th></tr></thead>
      <tbody>
        <tr><td>Brinmoor</td><td>4.7 m</td><td>Lowenna Tresize</td></tr>
        <tr><td>Gullspire</td><td>3.9 m</td><td>Senna Calloway</td></tr>
      </tbody>
    </table>
    <aside>ASIDE_RELATED_POSTS</aside>
    <form action="/subscribe">FORM_NEWSLETTER <input name="email"></form>
  </article>
</main>
<footer>FOOTER_COPYRIGHT &copy; 2024 Brinmoor</footer>
</body></html>
"""
BOILERPLATE = (
    "SCRIPT_TRACKING_ID", "SITE_BANNER_TEXT", "NAV_HOME", "NAV_BLOG", "COOKIE_BANNER_TEXT",
    "EDITOR_COMMENT", "ASIDE_RELATED_POSTS", "FORM_NEWSLETTER", "FOOTER_COPYRIGHT",
    "font-family",
)  # fmt: skip


def test_html_boilerplate_is_gone_and_the_article_stays() -> None:
    out = ingest_record(Record("web/install", kind="html", content=BLOG_PAGE))
    everything = "\n".join(c.text for c in out.chunks)
    for junk in BOILERPLATE:
        assert junk not in everything
    assert "Kinject runs on any machine with Python 3.11 — no GPU needed." in everything
    assert "pip install kinject and start the worker." in everything
    assert out.documents[0].title == "Installing Kinject – Brinmoor Docs"


def test_html_sections_start_with_their_heading_path() -> None:
    docs = parse_html(Record("web/install", content=BLOG_PAGE))
    by_section = {d.meta["section"]: d.text for d in docs}
    assert list(by_section) == ["Install", "Install > Linux", "Install > Tide tables"]
    assert by_section["Install"].startswith("Install: Kinject runs on")
    assert by_section["Install > Linux"].startswith("Install > Linux: Install it with")
    assert (
        "1. Create a virtual environment.\n2. Install the package."
        in (by_section["Install > Linux"])
    )
    assert len({d.doc_id for d in docs}) == 3


def test_html_table_rows_read_like_csv_rows() -> None:
    docs = parse_html(Record("web/install", content=BLOG_PAGE))
    tides = next(d.text for d in docs if d.meta["section"] == "Install > Tide tables")
    assert tides.splitlines() == [
        "Install > Tide tables:",
        "Spring tides at the harbours",
        "Harbour: Brinmoor. Height: 4.7 m. Keeper: Lowenna Tresize.",
        "Harbour: Gullspire. Height: 3.9 m. Keeper: Senna Calloway.",
    ]


def test_html_without_main_uses_body_and_first_h1_as_title() -> None:
    page = b"""<html><body><nav>Menu</nav><h1>Fennick Light</h1>
    <p>First lit in 1859.</p><ul><li>Tower: 31 m<ul><li>white</li></ul></li></ul>
    <footer>Contact us</footer></body></html>"""
    docs = parse_html(Record("w", content=page))
    assert docs[0].title == "Fennick Light"
    assert docs[0].text == "Fennick Light: First lit in 1859.\n\n- Tower: 31 m\n  - white"


def test_malformed_html_still_parses() -> None:
    page = (
        b"<html><body><div><p>Unclosed paragraph <b>bold <i>and italic</p>"
        b"<h2>Keepers</h3><p>Senna &amp; Ruan &unknown; kept <td>the stray cell</body>"
    )
    docs = parse_documents(Record("bad", content=page), "html")
    text = "\n".join(d.text for d in docs)
    assert "Unclosed paragraph bold and italic" in text
    assert "Keepers: Senna & Ruan &unknown; kept" in text
    assert "the stray cell" in text


def test_html_charset_from_meta_is_honoured() -> None:
    page = '<html><head><meta charset="windows-1252"></head><body><p>Café – déjà vu</p>'
    docs = parse_html(Record("w", content=page.encode("cp1252")))
    assert docs[0].text == "Café – déjà vu"


@pytest.mark.parametrize(
    ("page", "reason"),
    [
        (b"<html><head><title>Empty</title><script>var x = 1;</script></head><body></body></html>",
         "no visible text"),
        (b"<html><body><nav>Home | About</nav><footer>(c) 2024</footer><!-- x --></body></html>",
         "no visible text"),
        (b"", r"it is empty \(0 bytes\)"),
    ],
)
def test_html_without_visible_text_is_a_bad_record(page: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason) as info:
        ingest_record(Record("w", kind="html", content=page))
    assert info.value.stage == "parse"


def test_html_is_sniffed_from_bytes() -> None:
    out = ingest_record(Record("web/sniffed", content=BLOG_PAGE))
    assert {d.kind for d in out.documents} == {"html"}
    assert any("Lowenna Tresize" in c.text for c in out.chunks)


CATALOG = b"""<?xml version="1.0" encoding="UTF-8"?>
<catalog xmlns:x="urn:example:x">
  <title>Lighthouse register</title>
  <lights>
    <light id="L1" x:status="active">
      <name>Gullspire</name>
      <keeper><name>Senna Calloway</name><since>1998</since></keeper>
      <tags><tag>granite</tag><tag>north</tag></tags>
    </light>
    <light id="L2">
      <name>Fennick Light</name>
      <note>First lit in <b>1859</b> by the harbour board.</note>
      <keeper><name>Ruan Pengelly</name></keeper>
      <keeper><name>Tamsin Hocking</name></keeper>
    </light>
  </lights>
</catalog>
"""


def test_xml_repeated_records_become_one_document_each() -> None:
    docs = parse_xml(Record("x/reg", content=CATALOG))
    assert [d.meta["unit"] for d in docs] == ["file", "item", "item"]
    assert docs[0].text == "catalog.title: Lighthouse register"
    assert docs[1].text.splitlines() == [
        "light@id: L1",
        "light@status: active",
        "light.name: Gullspire",
        "light.keeper.name: Senna Calloway",
        "light.keeper.since: 1998",
        "light.tags.tag: granite, north",
    ]
    assert docs[1].title == "Gullspire" and docs[1].meta["item_index"] == 0
    assert docs[2].text.splitlines()[2:] == [
        "light.note: First lit in 1859 by the harbour board.",
        "light.keeper[0].name: Ruan Pengelly",
        "light.keeper[1].name: Tamsin Hocking",
    ]
    assert len({d.doc_id for d in docs}) == 3


def test_xml_single_record_is_one_document() -> None:
    data = b"<config><db host='localhost' port='5432'><name>kb</name></db></config>"
    docs = parse_xml(Record("x/cfg", content=data))
    assert [d.text for d in docs] == [
        "config.db@host: localhost\nconfig.db@port: 5432\nconfig.db.name: kb"
    ]


def test_xml_end_to_end_sniffed_and_chunked_per_record() -> None:
    out = ingest_record(Record("x/reg", content=CATALOG), IngestConfig())
    assert {d.kind for d in out.documents} == {"xml"}
    assert len(out.chunks) == 3
    assert any("light.keeper.name: Senna Calloway" in c.text for c in out.chunks)


def _billion_laughs() -> bytes:
    levels = "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )  # 10**9 "lol"s once expanded: about 3 GB
    return (
        f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{levels}]><lolz>&lol9;</lolz>'
    ).encode()


def test_xml_bomb_is_rejected_fast_without_memory_blow_up() -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(BadRecord, match="declares entity") as info:
            ingest_record(Record("x/bomb", content=_billion_laughs()))  # sniffed, too
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.stage == "parse"
    assert elapsed < 1.0 and peak < 20 * 2**20


def test_xml_external_entity_is_rejected(tmp_path: pytest.TempPathFactory) -> None:
    data = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>'
    )
    with pytest.raises(BadRecord, match="external entity 'xxe'") as info:
        parse_documents(Record("x/xxe", content=data), "xml")
    assert info.value.stage == "parse"
    assert "root:" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<a><b>text</a>", "xml is malformed"),
        (b"<a><b/></a>", "no text or attribute values"),
        (b"<a>" * 300 + b"deep" + b"</a>" * 300, "nested deeper"),
    ],
)
def test_bad_xml_names_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        ingest_record(Record("x/bad", kind="xml", content=data))


def _nested_divs(depth: int, inner: str) -> bytes:
    return ("<html><body>" + "<div>" * depth + inner + "</div>" * depth
            + "<p>The ferry to Skerra leaves at nine.</p></body></html>").encode()


def test_html_of_100k_nested_divs_is_read_and_keeps_its_text() -> None:
    """The probe's poison pill (1.1 MB): it never finished (the boilerplate stripper searched
    each tag's subtree) and, at 1,000 levels, the section walk hit the recursion limit."""
    inner = "<script>TRACKER_DEEP</script><h2>Deep</h2>Buoy nine marks the Tarn reef."
    page = _nested_divs(100_000, inner)
    assert len(page) > 1_000_000
    out = ingest_record(Record("web/deep", kind="html", content=page))
    text = "\n".join(c.text for c in out.chunks)
    assert "Buoy nine marks the Tarn reef." in text  # below the cap: read as plain text
    assert "The ferry to Skerra leaves at nine." in text
    assert "TRACKER_DEEP" not in text  # boilerplate is stripped at every depth


def test_html_within_the_depth_cap_keeps_its_structure() -> None:
    page = _nested_divs(200, "<h2>Moorings</h2><ul><li>Pier one</li><li>Pier two</li></ul>")
    docs = parse_html(Record("web/nested", kind="html", content=page))
    deep = next(d for d in docs if d.meta["section"] == "Moorings")
    assert deep.text.startswith("Moorings:\n- Pier one\n- Pier two")


def test_html_past_the_depth_cap_is_flattened_into_plain_text() -> None:
    page = _nested_divs(40, "<h2>Moorings</h2><ul><li>Pier one</li><li>Pier two</li></ul>")
    docs = parse_html(Record("web/nested", kind="html", content=page), max_depth=10)
    assert [d.meta["section"] for d in docs] == [""]  # the heading is text, not structure
    assert "Moorings Pier one Pier two" in docs[0].text
    assert "The ferry to Skerra leaves at nine." in docs[0].text


def test_nested_articles_and_their_headers_are_read_once_in_order() -> None:
    page = (b"<html><body><article><header>Byline one</header><p>First post.</p>"
            b"<article><p>Quoted post.</p></article></article>"
            b"<article><p>Second post.</p></article><header>SITE_HEADER</header></body></html>")
    text = "\n".join(d.text for d in parse_html(Record("web/posts", kind="html", content=page)))
    assert text.index("Byline one") < text.index("First post.") < text.index("Quoted post.")
    assert text.index("Quoted post.") < text.index("Second post.")
    assert text.count("Quoted post.") == 1 and "SITE_HEADER" not in text


def test_html_over_the_size_cap_is_a_bad_record_with_the_reason() -> None:
    page = b"<html><body>" + b"<p>Tide tables for the harbour.</p>" * 100 + b"</body></html>"
    with pytest.raises(BadRecord, match="html of 3,526 bytes is over the cap of 1,024") as info:
        ingest_record(Record("web/big", kind="html", content=page),
                      IngestConfig(html_max_bytes=1024))
    assert info.value.stage == "parse"
    assert ingest_record(Record("web/big", kind="html", content=page)).chunks  # default cap


# Real pages nobody in the project wrote (sources and licences in the files' own comments):
# DocBook XSL (Debian Reference, GPL-2+) and Sphinx (the Python documentation, PSF).
DATA = Path(__file__).parent / "data"
DEBIAN_REFERENCE = DATA / "debian-reference-ch02-excerpt.en.html"
PYTHON_DOCS = DATA / "python-docs-excerpt.html"


def _chunks_of(path: Path) -> list[str]:
    record = Record(f"docs/{path.name}", content=path.read_bytes(), meta={"filename": path.name})
    return [c.text for c in ingest_record(record).chunks]


def test_a_docbook_page_loses_its_table_of_contents_and_prev_next_bars() -> None:
    chunks = _chunks_of(DEBIAN_REFERENCE)
    everything = "\n".join(chunks)
    assert "Table of Contents" not in everything
    assert "2.1.2. Basic precautions" not in everything  # a TOC entry, not a section here
    assert "Chapter 1. GNU/Linux tutorials" not in everything  # the prev/next footer
    assert "Chapter 3. The system initialization" not in everything
    assert "Chapter 2. Debian package management" not in chunks  # the header bar alone
    assert any("dpkg -L package_name" in c for c in chunks)


def test_inline_markup_joins_its_neighbours_as_a_browser_shows_it() -> None:
    everything = "\n".join(_chunks_of(DEBIAN_REFERENCE))
    assert 'Update the "/etc/apt/sources.list" file' in everything
    assert 'e.g., "aptitude install perl".' in everything
    assert '" /etc/apt/sources.list "' not in everything


def test_a_table_keeps_its_docbook_title_in_every_chunk_of_its_rows() -> None:
    chunks = _chunks_of(DEBIAN_REFERENCE)
    titled = [c for c in chunks if "\nTable 2.13. List of advanced package management" in c]
    assert len(titled) > 1  # a long table: each of its chunks under its title
    for row in ("command: dpkg -L package_name. action: list contents of an installed package.",
                "command: dpkg -S file_name_pattern. action: list installed packages which"):
        assert all("Table 2.13." in c for c in chunks if row in c)
        assert any(row in c for c in titled)


def test_xhtml_is_read_without_a_warning_per_page() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        parse_html(Record("docs/ch02", content=DEBIAN_REFERENCE.read_bytes()))
    assert not [w for w in seen if "XML" in str(w.message)], [str(w.message) for w in seen]


def test_sphinx_headings_lose_their_permalink_pilcrows() -> None:
    docs = parse_html(Record("docs/py", content=PYTHON_DOCS.read_bytes()))
    sections = [d.meta["section"] for d in docs]
    assert "12. Virtual Environments and Packages > 12.2. Creating Virtual Environments" \
        in sections
    assert not any("¶" in d.text for d in docs)


def test_a_signature_and_what_it_does_share_a_chunk() -> None:
    chunks = _chunks_of(PYTHON_DOCS)
    (dumps,) = [c for c in chunks if "json.dumps(obj" in c]
    assert "Serialize obj to a JSON formatted str" in dumps


def test_a_line_that_introduces_code_stays_with_the_code() -> None:
    chunks = _chunks_of(PYTHON_DOCS)
    # the code itself fenced, as Markdown writes it (its layout is kept verbatim)
    assert any("On Unix or MacOS, run:\n```\nsource tutorial-env/bin/activate\n```" in c
               for c in chunks)
    assert any("directory path:\n```\npython3 -m venv tutorial-env" in c for c in chunks)
