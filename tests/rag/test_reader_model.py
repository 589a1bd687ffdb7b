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
