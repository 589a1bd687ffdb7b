"""Code keeps its layout through parsing, normalising, enrichment and chunking: indentation,
runs of spaces and line breaks, while the prose around it is tidied as before."""

from __future__ import annotations

from kinject.ingest.codeblocks import split_code
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.types import Record

# json.html of the Python 3.11 docs, as Sphinx writes its examples (highlighting spans).
SPHINX_PAGE = b"""<html><body><div role="main"><section>
<h1>json</h1>
<p>Extending   <code>JSONEncoder</code>:</p>
<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span>
<span class="gp">&gt;&gt;&gt; </span><span class="kn">import</span> <span class="nn">json</span>
<span class="gp">&gt;&gt;&gt; </span><span class="k">class</span> <span class="nc">ComplexEncoder</span><span class="p">(</span><span class="n">json</span><span class="o">.</span><span class="n">JSONEncoder</span><span class="p">):</span>
<span class="gp">... </span>    <span class="k">def</span> <span class="nf">default</span><span class="p">(</span><span class="bp">self</span><span class="p">,</span> <span class="n">obj</span><span class="p">):</span>
<span class="gp">... </span>        <span class="k">if</span> <span class="nb">isinstance</span><span class="p">(</span><span class="n">obj</span><span class="p">,</span> <span class="nb">complex</span><span class="p">):</span>
<span class="gp">... </span>            <span class="k">return</span> <span class="p">[</span><span class="n">obj</span><span class="o">.</span><span class="n">real</span><span class="p">,</span>  <span class="n">obj</span><span class="o">.</span><span class="n">imag</span><span class="p">]</span>
</pre></div></div>
<p>The   encoder was added on May 6, 2016.</p>
</section></div></body></html>"""  # noqa: E501

# venv.html: a shell transcript with a date in it.
TRANSCRIPT_PAGE = b"""<html><body><main><h1>venv</h1>
<p>Run   it:</p>
<pre>$ python
Python 3.5.1 (default, May  6 2016, 10:59:36)
...
&gt;&gt;&gt; import sys</pre>
</main></body></html>"""


def _texts(record: Record, **config: object) -> list[str]:
    return [c.text for c in ingest_record(record, IngestConfig(**config)).chunks]  # type: ignore[arg-type]


def test_a_python_example_in_html_keeps_its_indentation() -> None:
    [text] = _texts(Record("docs/json.html", kind="html", content=SPHINX_PAGE))
    lines = text.split("\n")
    assert "...     def default(self, obj):" in lines
    assert "...         if isinstance(obj, complex):" in lines
    assert "...             return [obj.real,  obj.imag]" in lines  # runs of spaces too
    # the prose around it is tidied as before, and the example follows its intro line
    assert "Extending JSONEncoder:\n```\n>>> import json" in text
    assert "The encoder was added on May 6, 2016 (2016-05-06)." in text


def test_fenced_markdown_code_keeps_its_indentation() -> None:
    md = ("# Loops\n\nA   loop:\n\n```python\nfor i in range(3):\n    if i:\n"
          "        print(i,   'May 1, 2023')\n```\n\nDone   on May 1, 2023.\n")
    [text] = _texts(Record("kb/loops.md", kind="markdown", content=md.encode()))
    assert ("```python\nfor i in range(3):\n    if i:\n        print(i,   'May 1, 2023')\n```"
            in text)
    assert "A loop:" in text and "Done on May 1, 2023 (2023-05-01)." in text


def test_dates_inside_code_are_not_enriched() -> None:
    [text] = _texts(Record("docs/venv.html", kind="html", content=TRANSCRIPT_PAGE))
    assert "Python 3.5.1 (default, May  6 2016, 10:59:36)" in text.split("\n")
    assert "2016-05-06" not in text


def test_code_split_across_chunks_is_fenced_and_indented_in_each() -> None:
    body = "\n".join(f"    total_{i} = add({i},  {i})" for i in range(40))
    md = f"Setup:\n\n```python\ndef build():\n{body}\n    return total_39\n```\n"
    texts = _texts(Record("kb/long.md", kind="markdown", content=md.encode()),
                   chunk_size=300, chunk_overlap=40)
    with_code = [t for t in texts if "total_" in t]
    assert len(with_code) > 2
    for text in with_code:
        code = [part for is_code, part in split_code(text) if is_code]
        assert code, f"a chunk lost its fences: {text!r}"
        assert all(line.startswith(("```", "def ", "    total_", "    return"))
                   for line in code[0].split("\n")), text
    every_line = {line for text in texts for line in text.split("\n")}
    assert {f"    total_{i} = add({i},  {i})" for i in range(40)} <= every_line


def test_indented_markdown_code_keeps_its_indentation() -> None:
    md = ("# Setup\n\nCreate   it:\n\n    python3 -m venv  .venv\n    if true; then\n"
          "        echo   'May 1, 2023'\n    fi\n\nThen   activate it.\n")
    [text] = _texts(Record("kb/setup.md", kind="markdown", content=md.encode()))
    assert ("Create it:\n\n```\npython3 -m venv  .venv\nif true; then\n"
            "    echo   'May 1, 2023'\nfi\n```\n\nThen activate it.") in text
