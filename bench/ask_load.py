"""Load benchmark of POST /v1/ask on a live `kinject serve` (real broker, real models).

N concurrent clients (httpx, asyncio) ask for T seconds, each question unique (so the answer
cache does not serve it). The same load runs twice against fresh servers in the same run:
once with the RAG service's dynamic batching on and once with it off, and the throughput
ratio is reported. Facts are invented (people, cities, fields) and published through the
API itself, so every answer must come from retrieval.

    python bench/ask_load.py --quick            # 16 clients for 20 s per server
    python bench/ask_load.py                    # 50 clients for 60 s
    python bench/ask_load.py --embedder hash    # deterministic embedder, the same LM

Last stdout line: {"requests", "errors", "p50_s", "p95_s", "rps", "sequential_rps",
"batched_vs_sequential", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from _common import _CITY, _FIELD, _FIRST, _LAST, emit, environment, parse_args, progress  # noqa: E402


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=None, help="load duration per server")
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--generator", default="smollm2")
    parser.add_argument("--people", type=int, default=30)


def facts(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """(source id, text, a question template {i}) about invented people."""
    out, seen = [], set()
    while len(out) < n:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        if name in seen:
            continue
        seen.add(name)
        city, field = rng.choice(_CITY), rng.choice(_FIELD)
        text = f"{name} lives in {city} and works in {field}."
        sid = "people/" + name.lower().replace(" ", "-")
        questions = (f"Where does {name} live? (ticket {{i}})",
                     f"What field does {name} work in? (ticket {{i}})")
        out += [(sid, text, q) for q in questions]
    return out


def batching_override(on: bool) -> dict[str, Any] | None:
    """The settings that turn the RAG service's dynamic batching on or off, or None when
    this kinject has no such setting."""
    from kinject.config import Settings

    field = Settings.model_fields.get("rag")
    model = getattr(field, "annotation", None) if field is not None else None
    fields = getattr(model, "model_fields", {})
    if "batch_window_ms" not in fields:
        return None
    overrides: dict[str, Any] = {"batch_window_ms": 10.0 if on else 0.0}
    if "max_batch" in fields:
        overrides["max_batch"] = 16 if on else 1
    return {"rag": overrides}


def start_server(data_dir: Path, args: argparse.Namespace, key: str,
                 extra: dict[str, Any]) -> tuple[str, threading.Event, threading.Thread]:
    from kinject.config import load_settings
    from kinject.serve import run_serve

    settings = load_settings(
        data_dir=data_dir,
        kafka={"partitions": 1, "bootstrap_servers": None},
        models={"embedder": args.embedder, "generator": args.generator},
        api={"api_key": key},
        **extra,
    )
    stop, got, box = threading.Event(), threading.Event(), {}

    def run() -> None:
        try:
            run_serve(settings, "127.0.0.1", 0, 1, stop=stop,
                      on_ready=lambda url: (box.update(url=url), got.set()))
        except BaseException as exc:
            box["error"] = exc
            got.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got.wait(300)
    if "url" not in box:
        raise SystemExit(f"the server did not start: {box.get('error')}")
    return box["url"], stop, thread


def prepare(url: str, key: str, data: list[tuple[str, str, str]]) -> None:
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=url, timeout=60) as c:
        while c.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the server never became ready")
            time.sleep(0.5)
        records = [{"source_id": sid, "content": text} for sid, text, _ in data[::2]]
        r = c.post("/v1/records", json={"records": records},
                   headers={"Authorization": f"Bearer {key}"})
        r.raise_for_status()
        while c.get("/v1/status").json()["index_chunks"] < len(records):
            if time.monotonic() > deadline:
                raise SystemExit("the records never reached the index")
            time.sleep(0.5)


async def load(url: str, data: list[tuple[str, str, str]], clients: int,
               seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    stop_at = time.monotonic() + seconds

    async def client(rng: random.Random) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while time.monotonic() < stop_at:
                question = rng.choice(data)[2].format(i=next(counter))
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/ask", json={"question": question})
                    ok = r.status_code == 200 and bool(r.json().get("text"))
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(random.Random(i)) for i in range(clients)))
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(int(p * len(latencies)), len(latencies) - 1)], 3)

    return {"requests": len(latencies) + errors, "ok": len(latencies), "errors": errors,
            "p50_s": pct(0.5), "p95_s": pct(0.95), "rps": round(len(latencies) / wall, 3)}


def converted(spec: str) -> str:
    """A GGUF generator (the default SmolLM2) converted once into kinject's model cache, so
    each fresh server in this run loads a plain folder in seconds."""
    from kinject.config import load_settings
    from kinject.models import ensure_converted, resolve_generator

    folder = ensure_converted(resolve_generator(spec), load_settings().models_dir)
    return str(folder) if folder is not None else spec


def run_once(args: argparse.Namespace, data: list[tuple[str, str, str]],
             extra: dict[str, Any], label: str) -> dict[str, Any]:
    key = "bench-" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="kinject-ask-load-") as tmp:
        progress(f"{label}: starting kinject serve")
        url, stop, thread = start_server(Path(tmp), args, key, extra)
        try:
            prepare(url, key, data)
            progress(f"{label}: {args.clients} clients for {args.seconds:g} s")
            result = asyncio.run(load(url, data, args.clients, args.seconds))
            progress(f"{label}: {result}")
            return result
        finally:
            stop.set()
            thread.join(60)


def main() -> None:
    args = parse_args("Load on /v1/ask: latency, errors, batched vs sequential", extra=_extra,
                      repeats=(1, 1))
    args.clients = args.clients or (16 if args.quick else 50)
    args.seconds = args.seconds or (20.0 if args.quick else 60.0)
    data = facts(random.Random(args.seed), args.people)
    args.generator = converted(args.generator)
    on, off = batching_override(True), batching_override(False)
    batched = run_once(args, data, on or {}, "batched" if on else "default")
    sequential = None
    if off is not None:
        sequential = run_once(args, data, off, "sequential")
    else:
        progress("this kinject has no dynamic-batching setting (rag.batch_window_ms): "
                 "batched_vs_sequential is null")
    ratio = None
    if sequential is not None and sequential["rps"] > 0:
        ratio = round(batched["rps"] / sequential["rps"], 3)
    emit({
        "benchmark": "ask_load",
        "quick": args.quick,
        "clients": args.clients,
        "seconds": args.seconds,
        "embedder": args.embedder,
        "generator": args.generator,
        "requests": batched["requests"],
        "errors": batched["errors"],
        "p50_s": batched["p50_s"],
        "p95_s": batched["p95_s"],
        "rps": batched["rps"],
        "sequential_rps": sequential["rps"] if sequential else None,
        "sequential_p50_s": sequential["p50_s"] if sequential else None,
        "sequential_errors": sequential["errors"] if sequential else None,
        "batched_vs_sequential": ratio,
        "batching_setting": on,
        "env": environment(),
    })


if __name__ == "__main__":
    main()
