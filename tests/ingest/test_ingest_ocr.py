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
