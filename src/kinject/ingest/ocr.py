"""OCR backends: RapidOCR (bundled ONNX models, pip only) and Tesseract (system binary).

Both are optional and imported only when used. RapidOCR 3.x loads its PP-OCR models from
the files inside its wheel (``rapidocr/models``) and never downloads at run time.

Every image passes three cheap checks before an engine sees it: its size is read from the
header and an image over ``max_pixels`` is refused before it is decoded (a 169 KB PNG can
hold 12000x12000 pixels: 17 s and 1.8 GB to decode and read); an image larger than
:data:`OCR_MAX_PIXELS` is scaled down to that working size; and a blank image (no glyph's
worth of ink, from its grey-level histogram) is not read at all. :data:`stats` counts the
images read and skipped, in this process.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kinject.errors import BadRecord, DependencyMissing
from kinject.ingest.normalise import remove_cjk_spaces

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

OcrEngine = Literal["auto", "rapidocr", "tesseract"]
ENGINES: tuple[str, ...] = ("auto", "rapidocr", "tesseract")
_INSTALL_HINT = "install the OCR extra (pip install 'kinject[ocr]') or Debian's tesseract-ocr"

# Images over this many pixels are refused before decoding: a 36 MP camera photo passes, and
# it is well under Pillow's own bomb limit (89.5 MP warns, 179 MP refuses), which a small
# PNG reaches at 17 s and 1.8 GB of decoding.
MAX_PIXELS = 40_000_000
# The working size for OCR: a larger image is scaled down to this many pixels first (a
# 12 MP, 4000x3000 photo passes unchanged). RapidOCR's detector works at 1280 px anyway, and
# Tesseract's time grows with the pixels; text legible at 4000 px stays legible.
OCR_MAX_PIXELS = 12_000_000
# Blank: fewer pixels than this share of the image differ from the background (the most
# common grey level) by more than _INK_LEVELS. One 12 pt glyph at 144 dpi is ~60 pixels of
# ink, 3e-5 of a rendered A4 page; scanner noise is lighter than _INK_LEVELS.
_BLANK_SHARE = 1e-5
_INK_LEVELS = 40


@dataclass
class OcrStats:
    """Images handed to an OCR engine (``read``) and blank ones skipped (``blank``)."""

    read: int = 0
    blank: int = 0


# This process's counts: the hook for metrics and for tests that must know what was read.
stats = OcrStats()


def available_ocr_engines() -> dict[str, bool]:
    """Which OCR engines can run here (for ``kinject doctor``); imports nothing heavy."""
    return {"rapidocr": _rapidocr_installed(), "tesseract": _tesseract_installed()}


def resolve_engine(engine: str = "auto") -> str:
    """The concrete engine ``engine`` stands for; DependencyMissing when it cannot run."""
    if engine not in ENGINES:
        raise ValueError(f"ocr engine must be one of {ENGINES}, got {engine!r}")
    available = available_ocr_engines()
    if engine == "auto":
        for name in ("rapidocr", "tesseract"):
            if available[name]:
                return name
        raise DependencyMissing(f"no OCR engine is available: {_INSTALL_HINT}")
    if not available[engine]:
        hint = (
            "pip install 'kinject[ocr]'"
            if engine == "rapidocr"
            else "install the tesseract binary (Debian: tesseract-ocr tesseract-ocr-chi-sim)"
            " and pip install pytesseract"
        )
        raise DependencyMissing(f"OCR engine {engine!r} is not available: {hint}")
    return engine


def ocr_image(data: bytes | Image, engine: OcrEngine | str = "auto", *,
              max_pixels: int = MAX_PIXELS) -> str:
    """The text in an image (bytes or a decoded Pillow image), one line per text line, top
    to bottom; "" for a blank image, which no engine reads.

    Raises BadRecord when the bytes are not an image or have more than ``max_pixels``
    pixels, and DependencyMissing when the engine cannot run.
    """
    name = resolve_engine(engine)
    image = load_image(data, max_pixels=max_pixels) if isinstance(data, bytes) else data
    if is_blank(image):
        stats.blank += 1
        return ""
    image = fit_for_ocr(image).convert("RGB")
    stats.read += 1
    text = _rapidocr(image) if name == "rapidocr" else _tesseract(image)
    return remove_cjk_spaces(text).strip()


def load_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image:
    """Decode image bytes with Pillow into RGB.

    BadRecord(stage="ocr") when they are not an image; BadRecord(stage="parse") when the
    header announces more than ``max_pixels`` pixels (checked before decoding).
    """
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the cap below is the check that counts here
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            opened = PILImage.open(io.BytesIO(data))
        width, height = opened.size
        if width * height > max_pixels:
            raise BadRecord(
                f"image of {width:,}x{height:,} = {width * height:,} pixels is over the cap of "
                f"{max_pixels:,} pixels (KINJECT_INGEST__IMAGE_MAX_PIXELS)", stage="parse")
        opened.load()
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise BadRecord(f"cannot decode image: {exc}", stage="ocr") from exc
    img: Image = ImageOps.exif_transpose(opened) or opened
    return img.convert("RGB")


def fit_for_ocr(image: Image, max_pixels: int = OCR_MAX_PIXELS) -> Image:
    """``image`` scaled down (aspect kept) to at most ``max_pixels`` pixels, else itself."""
    from PIL import Image as PILImage

    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = (max_pixels / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    log.debug("image of %dx%d scaled to %dx%d for OCR", image.width, image.height, *size)
    return image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=2.0)


def is_blank(image: Image) -> bool:
    """True when the image holds less ink than one small glyph (grey-level histogram: the
    pixels far from the background level, the most common one). Cheap: one C pass."""
    grey = image if image.mode == "L" else image.convert("L")
    hist = grey.histogram()
    background = max(range(256), key=hist.__getitem__)
    ink = sum(n for level, n in enumerate(hist) if abs(level - background) > _INK_LEVELS)
    return ink <= _BLANK_SHARE * grey.width * grey.height


def _rapidocr_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("rapidocr", "onnxruntime"))


def _tesseract_installed() -> bool:
    return (
        importlib.util.find_spec("pytesseract") is not None
        and shutil.which("tesseract") is not None
    )


def rapidocr_model_paths() -> dict[str, Path]:
    """The det/cls/rec ONNX files inside the installed rapidocr wheel.

    RapidOCR downloads a model whose file is missing (or fails its checksum) when it is left
    to find its models itself; naming the bundled files explicitly rules that out.
    """
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.origin:
        raise DependencyMissing("rapidocr is not installed: pip install 'kinject[ocr]'")
    root = Path(spec.origin).parent / "models"
    paths = {}
    for task in ("det", "cls", "rec"):
        found = sorted(root.glob(f"*_{task}_*.onnx"))
        if not found:
            raise DependencyMissing(
                f"rapidocr has no bundled {task} model in {root}; reinstall rapidocr==3.10.0"
            )
        paths[task] = found[-1]
    return paths


# A word glued to a number ("at06:40instead"): RapidOCR lost the spaces; such boxes are read
# again by Tesseract when it is installed (at most this many an image: ~0.1 s each).
_GLUED = re.compile(r"[^\W\d_]{2,}\d|\d[^\W\d_]{2,}", re.ASCII)
_MAX_REREADS = 32


@lru_cache(maxsize=1)
def _rapidocr_engine() -> Any:
    from rapidocr import RapidOCR

    models = rapidocr_model_paths()
    # Detection scales the longer side down to 1280 px instead of the shorter side up to
    # 736 px: a wide, short notice was upscaled 2.3x and read 2-3x slower, no better.
    params = {
        "Global.log_level": "error",
        "Det.model_path": str(models["det"]),
        "Cls.model_path": str(models["cls"]),
        "Rec.model_path": str(models["rec"]),
        "Det.limit_type": "max",
        "Det.limit_side_len": 1280,
    }
    log.info("loading RapidOCR from %s", models["det"].parent)
    return RapidOCR(params=params)


def _rapidocr(image: Image) -> str:
    result = _rapidocr_engine()(image)
    txts = getattr(result, "txts", None)
    boxes = getattr(result, "boxes", None)
    if not txts or boxes is None:
        return ""
    items = []
    rereads = 0
    for box, txt in zip(boxes, txts, strict=False):
        ys = [float(p[1]) for p in box]
        xs = [float(p[0]) for p in box]
        text = str(txt)
        if _GLUED.search(text) and rereads < _MAX_REREADS and _tesseract_installed():
            rereads += 1
            text = _spaced_by_tesseract(image, (min(xs), min(ys), max(xs), max(ys)), text)
        items.append((min(ys), max(ys), min(xs), text))
    return "\n".join(_reading_order(items))


def _spaced_by_tesseract(image: Image, box: tuple[float, float, float, float], text: str
                         ) -> str:
    """``text`` with the spaces Tesseract reads in its box, when Tesseract reads the same
    characters; else ``text``. RapidOCR's recogniser drops the spaces around numbers in
    JPEG-compressed scans ("Pier 4 at06:40instead of 07:15."), where Tesseract keeps them;
    a search for "06:40" then misses the page and the reader answers "at06:40instead"."""
    import pytesseract

    left, top, right, bottom = box
    pad = max(4.0, (bottom - top) * 0.2)
    crop = image.crop((max(0, int(left - pad)), max(0, int(top - pad)),
                       min(image.width, int(right + pad)), min(image.height, int(bottom + pad))))
    try:
        read = pytesseract.image_to_string(crop, lang="eng", config="--psm 7").strip()
    except pytesseract.TesseractError as exc:
        log.debug("tesseract could not re-read %r: %s", text, exc)
        return text
    same = "".join(read.split()) == "".join(text.split())
    return " ".join(read.split()) if same else text


def _reading_order(items: Sequence[tuple[float, float, float, str]]) -> list[str]:
    """Group boxes (top, bottom, left, text) into lines, top to bottom, left to right.

    A box joins the current line when its vertical centre lies within that line's span.
    """
    lines: list[list[tuple[float, float, float, str]]] = []
    for item in sorted(items, key=lambda it: (it[0] + it[1]) / 2):
        centre = (item[0] + item[1]) / 2
        if lines and lines[-1][0][0] <= centre <= lines[-1][0][1]:
            lines[-1].append(item)
        else:
            lines.append([item])
    return [" ".join(it[3] for it in sorted(line, key=lambda it: it[2])) for line in lines]


@lru_cache(maxsize=1)
def _tesseract_lang() -> str:
    import pytesseract

    try:
        langs = set(pytesseract.get_languages(config=""))
    except Exception:  # an old tesseract without --list-langs: ask for English only
        return "eng"
    wanted = [lang for lang in ("eng", "chi_sim") if lang in langs]
    if "chi_sim" not in wanted:
        log.warning("tesseract has no chi_sim data; Chinese text in images will not be read")
    return "+".join(wanted) or "eng"


def _tesseract(image: Image) -> str:
    import pytesseract

    try:
        text = pytesseract.image_to_string(image, lang=_tesseract_lang())
    except pytesseract.TesseractError as exc:
        raise BadRecord(f"tesseract failed: {exc}", stage="ocr") from exc
    return "\n".join(line.strip() for line in str(text).splitlines() if line.strip())


def warm_up(engine: OcrEngine | str = "auto") -> str | None:
    """Load the OCR engine now, so the first scanned page does not pay for it.

    Returns the engine's name, or None when no engine is available (images then keep only
    their captions).
    """
    try:
        name = resolve_engine(engine)
    except DependencyMissing:
        return None
    if name == "rapidocr":
        _rapidocr_engine()
    return name
