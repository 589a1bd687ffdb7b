from pathlib import Path

import pytest

from kinject.errors import ModelNotFound
from kinject.models import load_generator, resolve_generator, smollm2_gguf
from kinject.rag.generate import generate_chat


def test_default_generator_resolves_from_the_package() -> None:
    src = resolve_generator("smollm2")
    assert src.gguf_file is not None and src.gguf_file.endswith(".gguf")
    assert smollm2_gguf() is not None and smollm2_gguf().is_file()  # type: ignore[union-attr]


def test_unresolvable_generator_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__GENERATOR"):
        resolve_generator(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="config.json"):
        resolve_generator(str(tmp_path / "empty"))


def test_local_folder_model_loads_and_generates(tiny_lm_dir: Path, tmp_path: Path) -> None:
    loaded = load_generator(str(tiny_lm_dir), tmp_path / "models", "cpu", "auto")
    assert loaded.device == "cpu"
    text = generate_chat(loaded, [{"role": "user", "content": "When was it founded?"}], 5)
    assert isinstance(text, str)
    # a local folder needs no conversion: nothing is written to the model cache
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_gguf_is_converted_once_into_a_cached_folder(tmp_path: Path) -> None:
    from kinject.models import ensure_converted

    src = resolve_generator("smollm2")
    folder = ensure_converted(src, tmp_path)
    assert folder is not None and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_converted(src, tmp_path) == folder  # reused, not redone
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    load_generator.cache_clear()
    loaded = load_generator("smollm2", tmp_path, "cpu", "auto")
    answer = generate_chat(loaded, [{"role": "user", "content":
                                     "What is the capital of France? One word."}], 8)
    assert "paris" in answer.lower()
