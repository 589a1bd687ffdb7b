"""The relation families of the RAG quality bench, and their fixed dev/test split.

A family is a kind of entity (a person, an organisation, a product, a place, a procedure, a
piece of technical text) with a handful of relations. Each family has its own passage
phrasings (``passages.py``), question phrasings written separately (``questions.py``) and its
own names and values (``entities.py``), in English and Chinese.

The split is fixed here and nowhere else. Tuning (prompts, thresholds, reader training) may see
only the DEV families; the figures to report come from the TEST families, which no code,
prompt or training example of kinject may mention (``tests/test_bench_rag_data.py`` guards it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Split = Literal["dev", "test"]


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # people, organisations, products, places, procedures, technical, things
    split: Split
    relations: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.split not in ("dev", "test"):
            raise ValueError(f"split must be 'dev' or 'test', got {self.split!r}")
        if len(self.relations) < 3:
            raise ValueError(f"family {self.name!r} needs at least 3 relations")


FAMILIES: tuple[Family, ...] = (
    # -- dev: tuning may look at these ---------------------------------------------------------
    Family("scientist_bio", "people", "dev",
           ("birth_date", "birth_city", "university", "subject", "employer")),
    Family("company", "organisations", "dev",
           ("founded", "headquarters", "ceo", "staff", "product")),
    Family("gadget", "products", "dev",
           ("maker", "weight", "battery_life", "price", "release_year")),
    Family("town", "places", "dev",
           ("population", "river", "mayor", "twin_town", "market_day")),
    Family("permit", "procedures", "dev",
           ("office", "fee", "processing_days", "form_code", "document")),
    Family("appliance_manual", "technical", "dev",
           ("reset_seconds", "filter_interval", "tank_capacity", "setup_network", "noise_level")),
    Family("ship", "things", "dev",
           ("shipyard", "launched", "home_port", "captain", "tonnage")),
    # -- test: the reported figures; nothing in kinject may know these -------------------------
    Family("household", "people", "test",
           ("dog_name", "car_make", "hobby", "second_language", "hometown")),
    Family("research_lab", "organisations", "test",
           ("founder", "director", "funder", "lab_city", "focus")),
    Family("software_library", "products", "test",
           ("latest_version", "licence", "written_in", "maintainer", "first_release")),
    Family("landmark", "places", "test",
           ("architect", "height", "completed", "material", "district")),
    Family("recipe", "procedures", "test",
           ("oven_temp", "bake_time", "main_ingredient", "servings", "rest_time")),
    Family("cli_manual", "technical", "test",
           ("list_ports_cmd", "config_path", "default_port", "verbose_flag", "log_dir")),
    Family("sports_club", "organisations", "test",
           ("coach", "stadium", "club_founded", "league", "kit_colours")),
)

BY_NAME = {f.name: f for f in FAMILIES}
DEV: tuple[Family, ...] = tuple(f for f in FAMILIES if f.split == "dev")
TEST: tuple[Family, ...] = tuple(f for f in FAMILIES if f.split == "test")
LANGS = ("en", "zh")

# Words that name the test families' relations, as a list of cues would have to spell them.
# No code in kinject may hold them (tests/test_bench_rag_data.py): a reader that answers the
# test families must find the relation from the passage, not from a word list.
TEST_RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "household": ("dog", "pastime", "hobby", "fluent", "raised", "childhood",
                  "狗", "爱好", "外语", "老家"),
    "research_lab": ("funder", "funded", "founder", "资助", "经费", "创始人"),
    "software_library": ("maintainer", "licence", "license", "维护者", "许可证", "开源协议"),
    "landmark": ("architect", "clad in", "建筑师", "外墙", "竣工"),
    "recipe": ("oven", "servings", "ingredient", "烤箱", "主料", "静置", "几人份"),
    "cli_manual": ("open ports", "verbose", "log directory", "开放端口", "详细输出", "日志目录"),
    "sports_club": ("coach", "stadium", "league", "kit colours", "主教练", "主场", "联赛", "球衣"),
}
