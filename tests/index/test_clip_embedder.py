"""ClipEmbedder: settings -> open_clip model, loaded from a checkpoint the way a user's is."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kinject.config import load_settings
from kinject.doctor import check_clip
from kinject.errors import ModelNotFound
from kinject.index.clip_embedder import ClipEmbedder, make_clip_embedder, resolve_clip


def _png(color: tuple[int, int, int], shape: str = "box") -> bytes:
    img = Image.new("RGB", (96, 80), color)
    draw = ImageDraw.Draw(img)
    if shape == "box":
        draw.rectangle([10, 10, 50, 60], fill=(255 - color[0], 40, 200))
    else:
        draw.ellipse([30, 5, 90, 70], fill=(20, 255 - color[1], 90))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def clip(tiny_clip: dict[str, str]) -> ClipEmbedder:
    settings = load_settings(models=tiny_clip)
    embedder = make_clip_embedder(settings.models.clip_model, settings.models.clip_checkpoint)
    assert embedder is not None
    embedder.warm_up()
    return embedder


def test_images_and_texts_become_unit_vectors_in_one_space(clip: ClipEmbedder) -> None:
    a, b = _png((200, 30, 30)), _png((30, 30, 200), "disc")
    vecs = clip.encode_images([a, b, Image.open(io.BytesIO(a))])
    assert vecs.shape == (3, 64) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vecs[0], vecs[2], atol=1e-5)  # bytes and a PIL image are the same
    assert not np.allclose(vecs[0], vecs[1], atol=1e-3)
    texts = clip.encode_texts(["a red box", "a blue disc", "a red box"])
    assert texts.shape == (3, 64) and texts.dtype == np.float32
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert np.allclose(texts[0], texts[2]) and not np.allclose(texts[0], texts[1], atol=1e-3)
    assert clip.dim == 64 and clip.name == "clip:tiny-clip:tiny-clip.pt"
    assert clip.encode_images([]).shape == (0, 64)
    with pytest.raises(TypeError):
        clip.encode_texts("one string")  # type: ignore[arg-type]


def test_the_same_checkpoint_loads_from_an_open_clip_folder(
    clip: ClipEmbedder, tiny_clip: dict[str, str], tmp_path: Path
) -> None:
    # A hub repository downloaded by hand: open_clip_config.json + weights in one folder.
    folder = tmp_path / "my-clip"
    folder.mkdir()
    cfg = json.loads(Path(tiny_clip["clip_model"]).read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    shutil.copy(tiny_clip["clip_checkpoint"], folder / "open_clip_pytorch_model.bin")
    other = make_clip_embedder("ignored-when-a-folder", str(folder))
    assert other is not None
    image = _png((10, 160, 60))
    assert np.allclose(other.encode_images([image]), clip.encode_images([image]), atol=1e-5)
    assert np.allclose(other.encode_texts(["harbour"]), clip.encode_texts(["harbour"]),
                       atol=1e-5)


def test_without_a_checkpoint_the_image_index_is_off_and_doctor_says_so() -> None:
    settings = load_settings()
    assert settings.models.clip_checkpoint is None
    assert make_clip_embedder(settings.models.clip_model, None) is None
    assert resolve_clip("ViT-B-32", "  ") is None
    check = check_clip(settings)
    assert check.status == "off" and not check.required
    assert "KINJECT_MODELS__CLIP_CHECKPOINT" in check.detail and "caption" in check.detail
    assert "\n" not in check.detail


def test_an_unresolvable_checkpoint_names_the_setting(tiny_clip: dict[str, str],
                                                      tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__CLIP_CHECKPOINT"):
        make_clip_embedder(tiny_clip["clip_model"], str(tmp_path / "missing.pt"))
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__CLIP_CHECKPOINT.*tags"):
        make_clip_embedder("ViT-B-32", "no-such-tag")
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__CLIP_MODEL"):
        make_clip_embedder("ViT-Q-99", tiny_clip["clip_checkpoint"])
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__CLIP_MODEL"):
        make_clip_embedder(str(tmp_path / "nope.json"), tiny_clip["clip_checkpoint"])
    # doctor shows the same reason on the CLIP line instead of failing
    bad = load_settings(models={"clip_checkpoint": str(tmp_path / "missing.pt")})
    check = check_clip(bad)
    assert check.status == "missing" and "no such checkpoint file" in check.detail


def test_a_checkpoint_of_another_architecture_fails_at_load(tiny_clip: dict[str, str],
                                                             tmp_path: Path) -> None:
    cfg = json.loads(Path(tiny_clip["clip_model"]).read_text())
    cfg["embed_dim"] = 32
    other_arch = tmp_path / "tiny-clip-32.json"
    other_arch.write_text(json.dumps(cfg))
    embedder = ClipEmbedder(str(other_arch), tiny_clip["clip_checkpoint"])
    with pytest.raises(ModelNotFound, match="KINJECT_MODELS__CLIP_CHECKPOINT"):
        embedder.warm_up()


def test_a_hub_tag_resolves_without_the_network_and_fails_clearly_offline() -> None:
    source = resolve_clip("ViT-B-32", "openai")
    assert source is not None and not source.local and source.pretrained == "openai"
    check = check_clip(load_settings(models={"clip_checkpoint": "openai"}))
    assert check.status == "warn" and "internet" in check.detail
    with pytest.raises(ModelNotFound, match="internet"):
        ClipEmbedder("ViT-B-32", "openai").warm_up()


@pytest.mark.gpu
def test_a_gpu_gives_the_cpus_vectors(clip: ClipEmbedder, tiny_clip: dict[str, str]) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = ClipEmbedder(tiny_clip["clip_model"], tiny_clip["clip_checkpoint"], device="cuda")
    image = _png((90, 10, 200), "disc")
    assert np.allclose(gpu.encode_images([image]), clip.encode_images([image]), atol=1e-3)
    assert np.allclose(gpu.encode_texts(["quay"]), clip.encode_texts(["quay"]), atol=1e-3)
