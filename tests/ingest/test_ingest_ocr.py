from __future__ import annotations

import io
import os
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


def huge_png() -> bytes:
    """A valid 12000x12000 PNG of 41 KB (the probe's was 169 KB): 144 megapixels, under
    Pillow's own refusal limit (179), 17 s and 1.8 GB to decode and read before the cap."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000), 1).save(buf, "PNG")
    return buf.getvalue()


def test_image_over_the_pixel_cap_is_refused_before_decoding() -> None:
    from kinject.ingest.pipeline import IngestConfig, ingest_record
    from kinject.types import Record

    record = Record("img/huge", kind="image", content=huge_png())
    expected = "12,000x12,000 = 144,000,000 pixels is over the cap of 40,000,000 pixels"
    with pytest.raises(BadRecord, match=expected) as info:
        ingest_record(record, IngestConfig(ocr_engine="none"))
    assert info.value.stage == "parse"
    with pytest.raises(BadRecord, match="over the cap of 100 pixels"):
        ocr.load_image(render_scanned_page(LINES), max_pixels=100)


def test_images_over_the_working_size_are_scaled_down_before_ocr() -> None:
    from PIL import Image

    big = Image.new("L", (6000, 4000), 255)
    fitted = ocr.fit_for_ocr(big)
    assert fitted.width * fitted.height <= ocr.OCR_MAX_PIXELS
    assert fitted.width * fitted.height > 0.98 * ocr.OCR_MAX_PIXELS
    assert abs(fitted.width / fitted.height - 1.5) < 0.01  # the aspect is kept
    small = Image.new("L", (1200, 800), 255)
    assert ocr.fit_for_ocr(small) is small


def test_blank_images_are_never_handed_to_an_engine() -> None:
    import io

    from PIL import Image, ImageDraw

    if not any(available_ocr_engines().values()):
        pytest.skip("no OCR engine installed")
    before = (ocr.stats.read, ocr.stats.blank)
    for colour in (255, 0, 238):  # white paper, a dark screen, off-white paper
        buf = io.BytesIO()
        Image.new("L", (1654, 2339), colour).save(buf, "PNG")
        assert ocr_image(buf.getvalue()) == ""
    assert (ocr.stats.read, ocr.stats.blank) == (before[0], before[1] + 3)
    # One short word on an A4 page at 200 dpi is not blank.
    page = Image.new("L", (1654, 2339), 255)
    ImageDraw.Draw(page).text((800, 2200), "7", fill=0, font=ocr_font(24))
    assert not ocr.is_blank(page)
    assert ocr.is_blank(Image.new("RGB", (32, 32), "white"))


def ocr_font(size: int):  # type: ignore[no-untyped-def]
    from kinject.demo_data import load_font

    return load_font(size)


DEJAVU_SERIF = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed")
@pytest.mark.skipif(not os.path.exists(DEJAVU_SERIF), reason="fonts-dejavu not installed")
def test_words_glued_to_numbers_by_rapidocr_get_their_spaces_back() -> None:
    # A typed notice saved as JPEG (what a scanner or PIL's PDF writer stores): RapidOCR read
    # "Pier 4 at06:40instead of 07:15.", and "What time does the ferry leave?" was answered
    # "at06:40instead"; Tesseract, asked about that line alone, reads its spaces.
    pytest.importorskip("rapidocr")
    pytest.importorskip("pytesseract")
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (1240, 300), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(DEJAVU_SERIF, 34)
    lines = ["From 3 March 2026 the Saltmere ferry leaves", "Pier 4 at 06:40 instead of 07:15.",
             "Model MP3 player, x86 and H2O sold 12pcs"]
    for i, line in enumerate(lines):
        draw.text((80, 40 + 54 * i), line, fill="black", font=font)
    jpeg = io.BytesIO()
    page.save(jpeg, "JPEG")
    text = ocr_image(Image.open(io.BytesIO(jpeg.getvalue())), "rapidocr")
    assert "Pier 4 at 06:40 instead of 07:15." in text.splitlines()
    assert "Model MP3 player, x86 and H2O sold 12pcs" in text.splitlines()  # kept as they were
