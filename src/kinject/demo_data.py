"""A small sample knowledge base about a fictional archipelago, the Lantern Isles.

Every fact is invented, so a right answer proves that retrieval found it: no model can
know who keeps the Gullspire light. The sources cover each kind kinject ingests: a CSV
table, JSON documents, an English and a Chinese text, a "scanned" notice that only OCR can
read, and a picture whose facts are only in its caption (a ``<name>.meta.json`` sidecar,
carried as ``meta["caption"]`` on the record).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.ingest.envelope import SIDECAR_SUFFIX, record_from_path
from kinject.types import Record

if TYPE_CHECKING:
    from PIL.ImageFont import FreeTypeFont, ImageFont

log = logging.getLogger(__name__)

SOURCE_PREFIX = "demo/"

# Facts shared between sources are written once here, so the sources cannot disagree.
FACTS: dict[str, str] = {
    "guild_founded": "1847",
    "guild_house": "the Wick House",
    "guild_island": "Tessaly",
    "fennick_first_lit": "1859",
    "gullspire_keeper": "Senna Calloway",
    "corvane_keeper": "Mabli Orrun",
    "corvane_steps": "212",
    "wreck": "Halcyon Tern",
    "wreck_year": "1863",
    "vask_ferry": "Morrow Wren",
    "tea": "雾眉",
    "mooring_fee": "38 marks",
}

LIGHTHOUSES: tuple[dict[str, str], ...] = (
    {"Lighthouse": "Corvane Rock", "Island": "Corvane", "Keeper": FACTS["corvane_keeper"],
     "First lit": "1911", "Range (nautical miles)": "23"},
    {"Lighthouse": "Tessaly Point", "Island": "Tessaly", "Keeper": "Idris Vandermolen",
     "First lit": "1874", "Range (nautical miles)": "18"},
    {"Lighthouse": "Gullspire", "Island": "Brinmoor", "Keeper": FACTS["gullspire_keeper"],
     "First lit": "1902", "Range (nautical miles)": "14"},
    {"Lighthouse": "Saltreach Mole", "Island": "Saltreach", "Keeper": "Oskar Penhallow",
     "First lit": "1888", "Range (nautical miles)": "9"},
    {"Lighthouse": "Umberlee Head", "Island": "Umberlee", "Keeper": "Teodora Quill",
     "First lit": "1936", "Range (nautical miles)": "21"},
    {"Lighthouse": "Fennick Light", "Island": "Vask", "Keeper": "Ruan Delacorte",
     "First lit": FACTS["fennick_first_lit"], "Range (nautical miles)": "16"},
)  # fmt: skip

FERRIES: list[dict[str, Any]] = [
    {"route": "Brinmoor to Saltreach", "crossing_minutes": 55,
     "vessel": {"name": "Gannet's Promise", "built": 1998,
                "capacity": {"passengers": 140, "cars": 12}},
     "stops": ["Brinmoor", "Saltreach"], "runs_in_winter": True},
    {"route": "Saltreach to Vask", "crossing_minutes": 95,
     "vessel": {"name": FACTS["vask_ferry"], "built": 2004,
                "capacity": {"passengers": 80, "cars": 0}},
     "stops": ["Saltreach", "Umberlee", "Vask"], "runs_in_winter": False},
    {"route": "Tessaly to Corvane", "crossing_minutes": 40,
     "vessel": {"name": "Little Auk", "built": 1987, "capacity": {"passengers": 36, "cars": 0}},
     "stops": ["Tessaly", "Corvane"], "runs_in_winter": True},
]  # fmt: skip

GUILD: dict[str, Any] = {
    "name": "Guild of Lamplighters of the Lantern Isles",
    "founded": int(FACTS["guild_founded"]),
    "headquarters": {"building": FACTS["guild_house"].removeprefix("the "),
                     "island": FACTS["guild_island"]},
    "emblem": "a silver moth",
    "officers": [{"role": "Warden", "name": "Hollis Fairweather"},
                 {"role": "Keeper of Records", "name": "Perrin Ashdown"}],
}  # fmt: skip

HISTORY_EN = f"""The Lantern Isles

The Lantern Isles are six islands about forty miles west of the mainland: Brinmoor, \
Saltreach, Corvane, Tessaly, Umberlee and Vask. Their fogs are so thick in winter that \
the islanders say a lamp is worth more than a boat.

The Guild of Lamplighters was founded in {FACTS["guild_founded"]} at {FACTS["guild_house"]} \
on {FACTS["guild_island"]}. Its members trim the wicks of every lighthouse in the isles, and \
each new member swears an oath by the silver moth on the guild's emblem.

Every winter the islanders keep the Night of Small Flames, when every window on Brinmoor \
shows a single candle. The custom began after the wreck of the schooner {FACTS["wreck"]} \
in {FACTS["wreck_year"]}, whose crew found the harbour by the candles of a fisherman's \
cottage. The festival ends at dawn with a bell rung from the Gullspire lighthouse.
"""

HISTORY_ZH = f"""灯屿群岛简介

灯屿群岛位于大陆以西约六十公里的海上，由六座主要岛屿组成。\
群岛上最古老的灯塔是维斯克岛的芬尼克灯塔，于{FACTS["fennick_first_lit"]}年首次点亮。\
岛上居民以种植一种名为“{FACTS["tea"]}”的海盐茶而闻名，这种茶叶带有淡淡的咸味。

每年九月，萨尔特里奇港会举办为期三天的海盐茶节。节日期间，渔民们把新茶装在陶罐里，\
沿着码头摆成一条长龙。游客可以乘坐渡轮从布林莫尔岛前往萨尔特里奇，航程大约五十五分钟。
"""

NOTICE_LINES: tuple[str, ...] = (
    "SALTREACH HARBOUR NOTICE",
    f"The mooring fee for small boats is {FACTS['mooring_fee']} per night.",
    "The harbour master is Wendeline Crabbe.",
    "The fuel pontoon closes at dusk in the storm season.",
)

CORVANE_CAPTION = (
    f"The Corvane Rock lighthouse, painted in crimson and white bands, stands on a black "
    f"basalt stack; {FACTS['corvane_steps']} steps lead up to its lantern room, where "
    f"{FACTS['corvane_keeper']} keeps the light."
)


@dataclass(frozen=True)
class DemoQuestion:
    """A question the sample KB answers; ``expected`` are acceptable answer substrings."""

    question: str
    expected: tuple[str, ...]
    source_id: str
    lang: str = "en"
    via: str = "text"  # where the answer lives: csv, json, text, ocr, caption


DEMO_QUESTIONS: tuple[DemoQuestion, ...] = (
    DemoQuestion("Who is the keeper of the Gullspire lighthouse?",
                 (FACTS["gullspire_keeper"],), "demo/lighthouses.csv", via="csv"),
    DemoQuestion("What is the name of the vessel on the Saltreach to Vask ferry route?",
                 (FACTS["vask_ferry"],), "demo/ferries.json", via="json"),
    DemoQuestion("Which schooner's wreck started the Night of Small Flames?",
                 (FACTS["wreck"],), "demo/history.txt", via="text"),
    DemoQuestion("灯屿群岛的居民以种植哪种海盐茶而闻名？",
                 (FACTS["tea"],), "demo/history_zh.txt", lang="zh", via="text"),
    DemoQuestion("What is the nightly mooring fee for small boats at Saltreach harbour?",
                 (FACTS["mooring_fee"], FACTS["mooring_fee"].split()[0]),
                 "demo/harbour_notice.png", via="ocr"),
    DemoQuestion("How many steps lead up to the lantern room of the Corvane Rock lighthouse?",
                 (FACTS["corvane_steps"],), "demo/corvane_rock.png", via="caption"),
)  # fmt: skip


def write_sample_kb(directory: Path) -> list[Path]:
    """Write the sample sources into ``directory`` (created if needed); return their paths.

    The output is deterministic (seeded noise), so the same records and chunk ids come
    back every time. The image caption is written as a sidecar beside the image and is not
    in the returned list.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "lighthouses.csv": _csv_bytes(LIGHTHOUSES),
        "ferries.json": _json_bytes(FERRIES),
        "guild.json": _json_bytes(GUILD),
        "history.txt": HISTORY_EN.encode("utf-8"),
        "history_zh.txt": HISTORY_ZH.encode("utf-8"),
        "harbour_notice.png": render_scanned_page(NOTICE_LINES),
        "corvane_rock.png": render_lighthouse_picture(),
    }
    paths = []
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    sidecar = directory / ("corvane_rock.png" + SIDECAR_SUFFIX)
    sidecar.write_bytes(_json_bytes({"caption": CORVANE_CAPTION}))
    log.info("wrote %d sample sources to %s", len(paths), directory)
    return paths


def sample_records(directory: Path) -> list[Record]:
    """Write the sample KB into ``directory`` and return its Records, ids ``demo/<file>``."""
    return [
        record_from_path(path, source_id=SOURCE_PREFIX + path.name)
        for path in write_sample_kb(directory)
    ]


def render_scanned_page(lines: tuple[str, ...], seed: int = 7) -> bytes:
    """Black text on off-white paper, slightly rotated and speckled, as PNG bytes."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    font = load_font(30)
    title_font = load_font(36)
    width, height = 1100, 110 + 70 * len(lines)
    page = Image.new("L", (width, height), 238)
    draw = ImageDraw.Draw(page)
    y = 50
    for i, line in enumerate(lines):
        draw.text((60, y), line, fill=25, font=title_font if i == 0 else font)
        y += 70
    for _ in range(width * height // 250):  # paper grain and toner specks
        x, yy = rng.randrange(width), rng.randrange(height)
        page.putpixel((x, yy), rng.choice((150, 190, 255)))
    page = page.filter(ImageFilter.GaussianBlur(0.6))
    page = page.rotate(0.8, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=238)
    return _png(page)


def render_lighthouse_picture() -> bytes:
    """A simple drawing of a banded lighthouse on a rock at sea, as PNG bytes (no text)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (480, 360), (150, 190, 230))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 250, 480, 360), fill=(30, 70, 120))
    draw.polygon([(170, 270), (310, 270), (290, 230), (190, 230)], fill=(25, 25, 30))
    band_h = 24
    for i in range(6):
        top = 230 - (i + 1) * band_h
        colour = (180, 20, 40) if i % 2 == 0 else (245, 245, 245)
        inset = i * 3
        draw.rectangle((205 + inset, top, 275 - inset, top + band_h), fill=colour)
    draw.rectangle((218, 60, 262, 86), fill=(255, 220, 90))
    draw.polygon([(212, 60), (268, 60), (240, 36)], fill=(25, 25, 30))
    draw.polygon([(262, 70), (470, 40), (470, 100)], fill=(255, 240, 170))
    return _png(img)


def load_font(size: int) -> FreeTypeFont | ImageFont:
    """A TrueType sans font: DejaVu/Liberation/Arial where installed, else Pillow's own."""
    from PIL import ImageFont

    candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:/Windows/Fonts/arial.ttf",
        "DejaVuSans.ttf",  # FreeType also searches its own font directories
    ]
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"))
    for candidate in candidates:
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    log.info("no TrueType font found; using Pillow's default font")
    return ImageFont.load_default(size=size)


def _csv_bytes(rows: tuple[dict[str, str], ...]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
