from __future__ import annotations

import shutil
import time

import pytest

from kinject.demo_data import render_scanned_page
from kinject.errors import BadRecord, DependencyMissing
from kinject.ingest import ocr
from kinject.ingest.ocr import _reading_order, available_ocr_engines, ocr_image, resolve_engine

LINES = (
    "QUARTERLY TIDE REPORT",
    "The spring tide peaked at 4.7 metres on Brinmoor.",
    "Observer: Lowenna Tresize",
)


def test_available_engines_reports_both() -> None:
    engines = available_ocr_engines()
    assert set(engines) == {"rapidocr", "tesseract"}
    assert engines["tesseract"] == (shutil.which("tesseract") is not None)


def test_auto_without_any_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ocr, "available_ocr_engines", lambda: {"rapidocr": False, "tesseract": False}
    )
    with pytest.raises(DependencyMissing, match=r"kinject\[ocr\]"):
        resolve_engine("auto")
    with pytest.raises(DependencyMissing, match="tesseract"):
        resolve_engine("tesseract")


def test_rapidocr_models_are_the_bundled_files() -> None:
    pytest.importorskip("rapidocr")
    paths = ocr.rapidocr_model_paths()
    assert set(paths) == {"det", "cls", "rec"}
    assert all(p.is_file() and p.parent.parent.name == "rapidocr" for p in paths.values())


def test_unknown_engine_is_named() -> None:
    with pytest.raises(ValueError, match="'easyocr'"):
        resolve_engine("easyocr")


def test_reading_order_is_top_to_bottom_left_to_right() -> None:
    boxes = [
        (100, 120, 300, "second-right"),
        (10, 30, 0, "first"),
        (102, 118, 0, "second-left"),
        (200, 220, 0, "third"),
    ]
    assert _reading_order(boxes) == ["first", "second-left second-right", "third"]


@pytest.mark.slow
def test_rapidocr_reads_rendered_english_lines_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rapidocr")
    from rapidocr.utils.download_file import DownloadFile

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("rapidocr tried to download a model")

    # The engine must load the ONNX files bundled in the wheel, never fetch one.
    monkeypatch.setattr(DownloadFile, "run", no_download)
    ocr._rapidocr_engine.cache_clear()
    image = render_scanned_page(LINES)
    start = time.perf_counter()
    text = ocr_image(image, "rapidocr")
    elapsed = time.perf_counter() - start
    lines = text.splitlines()
    assert "4.7 metres" in text and "Lowenna Tresize" in text, text
    assert lines.index(next(ln for ln in lines if "4.7" in ln)) < lines.index(
        next(ln for ln in lines if "Lowenna" in ln)
    )
    assert elapsed < 60


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed")
def test_tesseract_reads_rendered_english_lines() -> None:
    pytest.importorskip("pytesseract")
    text = ocr_image(render_scanned_page(LINES), "tesseract")
    assert "Lowenna" in text


def test_bytes_that_are_no_image_are_bad_records() -> None:
    if not any(available_ocr_engines().values()):
        pytest.skip("no OCR engine installed")
    with pytest.raises(BadRecord, match="cannot decode image") as info:
        ocr_image(b"\x89PNG\r\n\x1a\nnot really a png")
    assert info.value.stage == "ocr"


ZH_LINES = ("灯屿港口通告", "小船每晚停泊费为三十八马克。")
_CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)


def _render_chinese() -> bytes:
    """Chinese lines drawn with a real CJK font (CI installs fonts-wqy-zenhei)."""
    import io
    from pathlib import Path

    from PIL import Image, ImageDraw, ImageFont

    font_path = next((f for f in _CJK_FONTS if Path(f).is_file()), None)
    if font_path is None:
        pytest.skip("no CJK font installed (Debian: fonts-wqy-zenhei)")
    font = ImageFont.truetype(font_path, 40)
    img = Image.new("RGB", (900, 80 + 70 * len(ZH_LINES)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(ZH_LINES):
        draw.text((40, 40 + 70 * i), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("engine", ["rapidocr", "tesseract"])
def test_chinese_text_is_read_without_spaces_between_characters(engine: str) -> None:
    if not available_ocr_engines()[engine]:
        pytest.skip(f"{engine} not installed")
    text = ocr_image(_render_chinese(), engine)
    assert "停泊费" in text and "三十八" in text, text
    assert "停 泊" not in text  # Tesseract spaces out Chinese characters; they are removed
