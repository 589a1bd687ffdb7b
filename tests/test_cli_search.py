"""`kinject search`: ranked hits with scores and sources, filters, JSON lines, broker sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app
from kinject.index.changes import SourceUpdate
from kinject.index.embedders import HashEmbedder, load_embedder
from kinject.index.text_index import TextIndex
from kinject.types import Chunk, content_hash

runner = CliRunner()
ENV = {"KINJECT_MODELS__EMBEDDER": "hash", "KINJECT_MODELS__EMBEDDER_ZH": "none",
       "KINJECT_KAFKA__BOOTSTRAP_SERVERS": "", "COLUMNS": "200"}


def _update(emb: HashEmbedder, source_id: str, text: str, kind: str = "text") -> SourceUpdate:
    chunk = Chunk(chunk_id=content_hash(source_id, text), doc_id=source_id, source_id=source_id,
                  text=text, kind=kind, meta={"tags": ["birds"]} if "falcon" in text else {})
    return SourceUpdate(op="upsert", source_id=source_id, chunks=(chunk,),
                        vectors=emb.encode([text]), embedder=emb.name, ts=1_700_000_000.0)


@pytest.fixture()
def filled(tmp_path: Path) -> Path:
    emb = load_embedder("hash")
    assert isinstance(emb, HashEmbedder)
    with TextIndex(tmp_path / "index", emb) as index:
        index.apply([
            _update(emb, "kb/falcons", "The red falcon nests on sea cliffs near Vask."),
            _update(emb, "kb/tax", "Quarterly tax filing deadlines for small shops."),
            _update(emb, "sheets/prices", "Item: falcon feed. Price: 12 marks.", kind="csv"),
        ])
    return tmp_path


def _search(data_dir: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["search", *args, "--data-dir", str(data_dir)],
                         env={**ENV, **(env or {})})


def test_json_lines_rank_hits_with_scores_and_sources(filled: Path) -> None:
    result = _search(filled, "red falcon cliffs", "--k", "2", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["source_id"] == "kb/falcons" and rows[0]["score"] >= rows[1]["score"]
    assert rows[0]["chunk_id"] and "falcon" in rows[0]["snippet"]


def test_table_output_and_filters(filled: Path) -> None:
    result = _search(filled, "falcon")
    assert result.exit_code == 0, result.output
    assert "kb/falcons" in result.stdout and "score" in result.stdout
    only_csv = _search(filled, "falcon", "--filter", "kind=csv", "--json")
    assert [json.loads(x)["source_id"] for x in only_csv.stdout.splitlines()] == [
        "sheets/prices"]
    by_prefix = _search(filled, "falcon", "-f", "source=kb/", "-f", "tag=birds", "--json")
    assert [json.loads(x)["source_id"] for x in by_prefix.stdout.splitlines()] == [
        "kb/falcons"]
    later = _search(filled, "falcon", "-f", "since=2024-01-01", "--json")
    assert later.exit_code == 0 and later.stdout.strip() == ""
    earlier = _search(filled, "falcon", "-f", "until=2024-01-01", "--mode", "bm25", "--json")
    assert {json.loads(x)["source_id"] for x in earlier.stdout.splitlines()} == {
        "kb/falcons", "sheets/prices"}


@pytest.mark.parametrize("args, message", [
    (["--filter", "colour=red"], "unknown filter key"),
    (["--filter", "kind"], "key=value"),
    (["--filter", "since=yesterday"], "ISO date"),
    (["--filter", "lang=fr"], "unknown lang"),
    (["--mode", "fuzzy"], "--mode"),
])
def test_bad_filters_and_modes_exit_2(filled: Path, args: list[str], message: str) -> None:
    result = _search(filled, "falcon", *args)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.kafka
def test_search_syncs_from_the_broker_first(tmp_path: Path, kafka_bootstrap: str) -> None:
    from kinject.config import load_settings
    from kinject.stream.clients import make_producer
    from kinject.stream.events import encode_update
    from kinject.stream.topics import ensure_topics

    settings = load_settings(data_dir=tmp_path, kafka={"bootstrap_servers": kafka_bootstrap,
                                                       "topic_prefix": "clisearch"})
    topics = ensure_topics(settings.kafka, kafka_bootstrap)
    producer = make_producer(settings.kafka, kafka_bootstrap)
    emb = load_embedder("hash")
    assert isinstance(emb, HashEmbedder)
    producer.send(topics.chunks, key=b"kb/otters",
                  value=encode_update(_update(emb, "kb/otters", "Otters sleep under the pier.")))
    producer.flush()
    producer.close()
    result = _search(tmp_path, "otters pier", "--json",
                     env={"KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
                          "KINJECT_KAFKA__TOPIC_PREFIX": "clisearch"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["source_id"] == "kb/otters"


def test_a_hit_whose_text_looks_like_rich_markup_is_printed_as_it_is(tmp_path: Path) -> None:
    # Square brackets in indexed text (a path, BBCode, a Markdown link) are the text, not
    # rich's markup: "[/etc/kinject]" crashed the table (a closing tag with nothing open)
    # and "[bold]" vanished from it.
    emb = load_embedder("hash")
    assert isinstance(emb, HashEmbedder)
    text = "Keys live in [/etc/kinject] and [bold]never[/bold] in the repo."
    with TextIndex(tmp_path / "index", emb) as index:
        index.apply([_update(emb, "kb/[ops]", text)])
    result = _search(tmp_path, "keys repo")
    assert result.exit_code == 0, result.output
    assert "[/etc/kinject]" in result.stdout and "[bold]never[/bold]" in result.stdout
    assert "kb/[ops]" in result.stdout


def test_hybrid_hits_whose_cosines_rise_down_the_list_say_how_they_are_ranked(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on Debian Reference: scores 0.446, 0.450, 0.429 down the list, unexplained."""
    from kinject.cli.render import print_hits
    from kinject.types import Hit

    monkeypatch.setenv("COLUMNS", "200")
    meta = {"fused": 0.03, "space": "main"}
    fused = [Hit("a", "debref/ch02", "dpkg -L lists a package's files", 0.446, dict(meta)),
             Hit("b", "debref/ch02", "dpkg -S finds the package of a file", 0.450, dict(meta))]
    print_hits(fused)
    assert "ranked by fusing the vector and BM25 scores" in capsys.readouterr().out
    print_hits(sorted(fused, key=lambda h: -h.score))
    assert "ranked by fusing" not in capsys.readouterr().out


def test_code_in_a_hit_is_shown_indented_in_the_table_and_in_citations(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """json.html's ComplexEncoder read flat ("... def default(self, obj): ... if ...")."""
    from kinject.cli.render import print_answer
    from kinject.ingest.pipeline import ingest_record
    from kinject.types import Answer, Citation, Hit, Record

    page = (b"<html><body><main><h1>json</h1><p>Extending JSONEncoder:</p><pre>"
            b"&gt;&gt;&gt; class ComplexEncoder(json.JSONEncoder):\n"
            b"...     def default(self, obj):\n"
            b"...         if isinstance(obj, complex):\n"
            b"...             return [obj.real, obj.imag]</pre></main></body></html>")
    [chunk] = ingest_record(Record("docs/json.html", kind="html", content=page)).chunks
    emb = load_embedder("hash")
    assert isinstance(emb, HashEmbedder)
    with TextIndex(tmp_path / "index", emb) as index:
        index.apply([SourceUpdate(op="upsert", source_id=chunk.source_id, chunks=(chunk,),
                                  vectors=emb.encode([chunk.text]), embedder=emb.name)])
    result = _search(tmp_path, "ComplexEncoder default")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for code in ("...     def default(self, obj):", "...         if isinstance(obj, complex):"):
        assert any(code in line for line in lines), result.stdout

    hit = Hit(chunk.chunk_id, chunk.source_id, chunk.text, 0.9, dict(chunk.meta))
    print_answer(Answer("Subclass JSONEncoder [1].", (Citation.of(1, hit),)), rich=False)
    assert "...         if isinstance(obj, complex):" in capsys.readouterr().out.splitlines()
