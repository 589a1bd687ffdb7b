"""The benchmark convention shared by every script in bench/.

A benchmark generates its own data, reports progress on stderr, repeats each measurement
and keeps the median, and prints exactly one JSON object as the last line of stdout::

    python bench/embed.py --quick        # well under 2 minutes on 2 CPU cores
    python bench/embed.py --out bench/out # also writes a CSV (and a PNG when matplotlib is there)
"""

from __future__ import annotations

import argparse
import base64
import csv
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    repeats: tuple[int, int] = (3, 5),
) -> argparse.Namespace:
    """``--quick``, ``--repeats``, ``--seed``, ``--out``, plus whatever ``extra`` adds.

    ``repeats`` is the default number of timed runs as (quick, full).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes fast")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for CSV and plot files")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = repeats[0] if args.quick else repeats[1]
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def use_threads(threads: int | None) -> None:
    """``--threads``: kinject's own ``models.threads`` (``KINJECT_MODELS__THREADS``) for every
    kinject the bench starts, in this process or as a ``kinject serve`` child, and the same
    count for this process's own torch, OpenMP and BLAS work (peers, micro-benchmarks). Call
    it before models load. None changes nothing."""
    if threads is None:
        return
    os.environ["KINJECT_MODELS__THREADS"] = str(threads)
    from kinject.threads import apply_threads

    apply_threads(threads)


_START = time.perf_counter()


def progress(msg: str) -> None:
    """One line on stderr with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def environment() -> dict[str, Any]:
    """What a reader needs to compare runs: machine, Python, core count, torch threads."""
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    return info


def emit(result: dict[str, Any]) -> None:
    """Print the result as ONE JSON line; it must be the last line a benchmark writes to stdout."""
    print(json.dumps(result, ensure_ascii=False, sort_keys=True), flush=True)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def bar_plot(
    path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str
) -> Path | None:
    """A PNG bar chart, or None (with a note on stderr) when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        progress(f"matplotlib not installed: skipping plot {path.name}")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels)), 3.5))
    ax.bar(list(labels), list(values))
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def publish_and_wait(url: str, key: str, bodies: Mapping[str, str | bytes],
                     timeout_s: float = 1800.0, batch: int = 200) -> tuple[float, int]:
    """Publish one record per source to a running ``kinject serve`` and wait until each is
    searchable: wait for ``/readyz``, POST ``/v1/records`` in batches (text as ``content``,
    bytes base64 as ``content_b64``, the kind sniffed by the server), then poll
    ``/v1/lineage/<source_id>`` until every source has chunks in the index.

    Returns (seconds from the first POST until all were indexed, chunks in the index)."""
    import httpx

    def record(source_id: str, body: str | bytes) -> dict[str, str]:
        if isinstance(body, bytes):
            return {"source_id": source_id, "content_b64": base64.b64encode(body).decode()}
        return {"source_id": source_id, "content": body}

    deadline = time.monotonic() + timeout_s
    items = list(bodies.items())
    with httpx.Client(base_url=url, timeout=600) as c:
        while c.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the server never became ready")
            time.sleep(0.5)
        t0 = time.perf_counter()
        for i in range(0, len(items), batch):
            c.post("/v1/records", json={"records": [record(*kv) for kv in items[i:i + batch]]},
                   headers={"Authorization": f"Bearer {key}"}).raise_for_status()
        waiting = set(bodies)
        while waiting:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(waiting)} records never reached the index, e.g. "
                                 f"{sorted(waiting)[:3]}")
            for sid in sorted(waiting):
                r = c.get(f"/v1/lineage/{sid}")
                if r.status_code == 200 and r.json().get("chunks_now"):
                    waiting.discard(sid)
            if waiting:
                time.sleep(0.5)
        seconds = time.perf_counter() - t0
        chunks = int(c.get("/v1/status").json()["index_chunks"])
    progress(f"{len(items)} records published and indexed in {seconds:.1f}s ({chunks} chunks)")
    return seconds, chunks


# --- synthetic data: invented people, so nothing comes from outside ----------------------------

_FIRST = [
    "Aldric",
    "Brenna",
    "Cosmo",
    "Dagny",
    "Elowen",
    "Fenwick",
    "Galen",
    "Hesper",
    "Isolde",
    "Jory",
    "Kestrel",
    "Lysandra",
    "Merrick",
    "Nerys",
    "Orrin",
    "Perpetua",
    "Quillon",
    "Rowan",
]
_LAST = [
    "Ashdown",
    "Blackwood",
    "Corrow",
    "Dunmere",
    "Everly",
    "Fallowfield",
    "Greythorn",
    "Hollis",
    "Ironside",
    "Juniper",
    "Kettering",
    "Larkspur",
    "Marchbank",
    "Northcote",
]
_CITY = ["Port Avalen", "Thistlebury", "Mirecastle", "Oldharbour", "Wrenfield", "Duskmoor"]
_FIELD = [
    "marine biology",
    "medieval history",
    "quantum chemistry",
    "urban planning",
    "glass sculpture",
    "linguistics",
    "orchard management",
    "bridge engineering",
]
_ORG = [
    "Halcyon Instruments",
    "Verdant Mills",
    "Copperleaf Press",
    "the Northcote Institute",
    "Bramble & Sons",
    "the Duskmoor Observatory",
]

_ZH_SURNAME = list("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗")
_ZH_GIVEN = ["小明", "雨桐", "子轩", "欣怡", "浩然", "思远", "梓涵", "俊杰", "若曦", "一鸣"]
_ZH_CITY = ["大理", "泉州", "洛阳", "桂林", "喀什", "丽江", "扬州", "敦煌"]
_ZH_FIELD = ["海洋生物学", "中世纪历史", "量子化学", "城市规划", "玻璃雕塑", "语言学", "果园管理"]
_ZH_ORG = ["青岚仪器公司", "翠谷纺织厂", "铜叶出版社", "北岸研究所", "星河天文台"]


def english_bio(rng: random.Random) -> str:
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    year = rng.randint(1921, 1999)
    return (
        f"{name} was born in {rng.choice(_CITY)} in {year} and studied {rng.choice(_FIELD)} "
        f"before joining {rng.choice(_ORG)}. In {year + rng.randint(25, 40)} {name.split()[0]} "
        f"moved to {rng.choice(_CITY)}, where a small museum now keeps the notebooks, letters "
        f"and {rng.randint(3, 90)} unfinished drawings of bridges, boats and birds."
    )


def chinese_bio(rng: random.Random) -> str:
    name = rng.choice(_ZH_SURNAME) + rng.choice(_ZH_GIVEN)
    year = rng.randint(1921, 1999)
    return (
        f"{name}于{year}年出生在{rng.choice(_ZH_CITY)}，大学学习{rng.choice(_ZH_FIELD)}，"
        f"毕业后加入{rng.choice(_ZH_ORG)}。{year + rng.randint(25, 40)}年，{name}搬到"
        f"{rng.choice(_ZH_CITY)}，那里的一家小博物馆至今保存着他的笔记、书信和"
        f"{rng.randint(3, 90)}幅未完成的画。"
    )


def synthetic_texts(n: int, lang: str, seed: int = 0) -> list[str]:
    """``n`` short biographies of invented people, in ``en`` or ``zh``."""
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
    rng = random.Random(f"{seed}-{lang}")
    make = english_bio if lang == "en" else chinese_bio
    return [make(rng) for _ in range(n)]
