"""Chaos benchmark: a live `kinject serve` + `kinject worker` under a mixed stream of good
and hostile records while clients search and ask, with kill -9 of the worker, the embedded
broker and serve itself at random moments (each restarted: the broker by serve's own
supervisor, the worker and serve by this script, as systemd or compose would).

The road: `kinject serve -n 0` (API, index materialiser, outbox keeper, the supervised
embedded broker) and one `kinject worker` process pointed at that broker, sharing the data
directory. Hostile records (oversized, bad JSON, deep JSON, a corrupt PDF, NUL bytes) go
through POST /v1/records like the good ones; the oversized one must be refused (400),
the others accepted and dead-lettered once each. There is no peer system to compare with
here, so no peer ratio is reported: the figures are absolute (lost records must be 0).

    python bench/chaos.py --quick     # 60 s of load, one kill of each kind
    python bench/chaos.py             # 240 s of load, three kills of each kind

Last stdout line: {"accepted", "searchable", "lost", "dead_letters", "dead_letter_duplicates",
"dead_letters_missing", "search_p95_s", "ask_p95_s", "rss_growth_mb", ...}. Memory is the
resident size of serve + worker (without the broker); a killed process is replaced by a new
one, so growth compares the processes alive at the start and at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import psutil  # noqa: E402

from _common import _CITY, _FIELD, _FIRST, _LAST, emit, environment, parse_args, progress  # noqa: E402

HOSTILE_KINDS = ("bad_json", "deep_json", "corrupt_pdf", "nul_bytes")


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None, help="load duration")
    parser.add_argument("--kills", type=int, default=None, help="kills of each kind")
    parser.add_argument("--embedder", default="hash")
    parser.add_argument("--generator", default="smollm2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def converted(spec: str) -> str:
    """The default GGUF generator converted once into kinject's model cache, so each
    (re)start of serve loads a plain folder in seconds."""
    from kinject.config import load_settings
    from kinject.models import ensure_converted, resolve_generator

    folder = ensure_converted(resolve_generator(spec), load_settings().models_dir)
    return str(folder) if folder is not None else spec


def hostile(kind: str, sid: str) -> dict[str, Any]:
    if kind == "bad_json":
        return {"source_id": sid, "kind": "json", "content": '{"unclosed": [1, 2'}
    if kind == "deep_json":
        return {"source_id": sid, "kind": "json", "content": "[" * 20000 + "]" * 20000}
    if kind == "corrupt_pdf":
        junk = b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\n" + secrets.token_bytes(2000)
        return {"source_id": sid, "kind": "pdf", "content_b64": base64.b64encode(junk).decode()}
    if kind == "nul_bytes":
        return {"source_id": sid, "kind": "text", "content": "abc\u0000def\u0000" * 200}
    if kind == "oversized":  # over the 10 MB record limit, under the 16 MiB body limit
        return {"source_id": sid, "content": "x" * (11 * 1024 * 1024)}
    raise ValueError(kind)


class Road:
    """serve and worker processes, restartable; the broker lives inside serve."""

    def __init__(self, data: Path, api_port: int, env: dict[str, str], logs: Path) -> None:
        self.data, self.api_port, self.env, self.logs = data, api_port, env, logs
        self.url = f"http://127.0.0.1:{api_port}"
        self.serve: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.lives = {"serve": 0, "worker": 0}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.lives[name] += 1
        log = (self.logs / f"{name}-{self.lives[name]}.log").open("wb")
        return subprocess.Popen([sys.executable, "-m", "kinject", *argv], env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    def start_serve(self) -> None:
        self.serve = self._spawn("serve", ["serve", "-n", "0", "--port", str(self.api_port)],
                                 self.env)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start; see {self.logs}")
            time.sleep(0.3)

    def broker(self) -> tuple[psutil.Process, int] | None:
        """serve's embedded broker and its port (None while there is none)."""
        if self.serve is None:
            return None
        try:
            for child in psutil.Process(self.serve.pid).children(recursive=True):
                argv = child.cmdline()
                if argv and argv[0].endswith("tansu"):
                    return child, int(argv[argv.index("--listener-url") + 1].rsplit(":", 1)[1])
        except psutil.Error:
            return None
        return None

    def start_worker(self) -> None:
        deadline = time.monotonic() + 60
        while (found := self.broker()) is None:
            if time.monotonic() > deadline:
                raise SystemExit("serve runs no embedded broker")
            time.sleep(0.2)
        env = {**self.env, "KINJECT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{found[1]}"}
        self.worker = self._spawn("worker", ["worker", "-n", "1"], env)

    def kill(self, what: str) -> None:
        with self.lock:
            if what == "broker":
                found = self.broker()
                if found is not None:
                    found[0].send_signal(signal.SIGKILL)
                return  # serve's supervisor restarts it on the same port
            if what == "worker" and self.worker is not None:
                self.worker.kill()
                self.worker.wait()
                self.start_worker()
                return
            if what == "serve" and self.serve is not None:
                self.serve.kill()  # its broker dies with it (a new one comes with serve)
                self.serve.wait()
                if self.worker is not None:  # it points at the old broker's port
                    self.worker.kill()
                    self.worker.wait()
                self.start_serve()
                self.start_worker()

    def rss_mb(self) -> float:
        total = 0
        for p in (self.serve, self.worker):
            if p is not None and p.poll() is None:
                try:
                    total += psutil.Process(p.pid).memory_info().rss
                except psutil.Error:
                    pass
        return total / 1024 / 1024

    def stop(self) -> float:
        """SIGTERM both; seconds until they have exited."""
        t0 = time.perf_counter()
        for p in (self.worker, self.serve):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.worker, self.serve):
            if p is not None:
                try:
                    p.wait(90)
                except subprocess.TimeoutExpired:
                    p.kill()
        return round(time.perf_counter() - t0, 2)


class Load:
    """Writers post records, readers search and ask; everything is counted."""

    def __init__(self, url: str, key: str, rng: random.Random) -> None:
        self.url, self.key, self.rng = url, key, rng
        self.stop = threading.Event()
        self.accepted_good: list[str] = []
        self.accepted_hostile: dict[str, str] = {}  # sid -> kind
        self.refused: dict[str, int] = {}  # "status reason" -> count
        self.unacknowledged = 0  # the connection broke: accepted or not, the client cannot know
        self.latency: dict[str, list[float]] = {"search": [], "ask": []}
        self.failures: dict[str, int] = {}
        self.texts: dict[str, str] = {}  # good source id -> its text
        self._n = 0

    def _fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    def _good(self) -> dict[str, Any]:
        self._n += 1
        name = f"{self.rng.choice(_FIRST)} {self.rng.choice(_LAST)}"
        text = (f"Record {self._n}: {name} of {self.rng.choice(_CITY)} studies "
                f"{self.rng.choice(_FIELD)} and keeps {self.rng.randint(2, 999)} lanterns.")
        self.texts[f"good/{self._n}"] = text
        return {"source_id": f"good/{self._n}", "content": text}

    def writer(self, oversized_every: int) -> None:
        auth = {"Authorization": f"Bearer {self.key}"}
        batch_no = 0
        with httpx.Client(base_url=self.url, timeout=30, headers=auth) as c:
            while not self.stop.is_set():
                batch_no += 1
                records = [self._good() for _ in range(self.rng.randint(1, 3))]
                kinds: dict[str, str] = {}
                if batch_no % 4 == 0:
                    kind = HOSTILE_KINDS[(batch_no // 4) % len(HOSTILE_KINDS)]
                    sid = f"hostile/{kind}/{batch_no}"
                    records.append(hostile(kind, sid))
                    kinds[sid] = kind
                if batch_no % oversized_every == 0:  # refused whole: nothing of it published
                    sid = f"hostile/oversized/{batch_no}"
                    records.insert(0, hostile("oversized", sid))
                try:
                    r = c.post("/v1/records", json={"records": records})
                except httpx.HTTPError:
                    self.unacknowledged += len(records)
                    self.stop.wait(0.5)
                    continue
                if r.status_code == 202:
                    for rec in records:
                        sid = rec["source_id"]
                        if sid in kinds:
                            self.accepted_hostile[sid] = kinds[sid]
                        else:
                            self.accepted_good.append(sid)
                else:
                    why = f"{r.status_code} {r.json().get('error', {}).get('code', '?')}"
                    self.refused[why] = self.refused.get(why, 0) + 1
                self.stop.wait(0.3)

    def reader(self, what: str) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as c:
            while not self.stop.is_set():
                texts = list(self.texts.values())
                words = (self.rng.choice(texts) if texts else "a b lanterns").split()
                q = " ".join(words[2:6])
                t0 = time.perf_counter()
                try:
                    if what == "search":
                        r = c.get("/v1/search", params={"q": q, "k": 5})
                    else:
                        r = c.post("/v1/ask", json={"question": f"What does {q} keep?"})
                except httpx.TransportError:
                    self._fail(f"{what}: no connection (serve down)")
                    self.stop.wait(0.5)
                    continue
                if r.status_code == 200:
                    self.latency[what].append(time.perf_counter() - t0)
                else:
                    self._fail(f"{what}: HTTP {r.status_code}")
                self.stop.wait(0.1 if what == "search" else 0.5)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(int(q * len(s)), len(s) - 1)], 3)


def settle(url: str, key: str, load: Load, timeout_s: float) -> tuple[set[str], dict[str, int],
                                                                        float]:
    """Wait until every accepted good record is searchable and every accepted hostile one
    dead-lettered; returns (searchable good ids, dead letters per hostile id, seconds)."""
    t0 = time.perf_counter()
    auth = {"Authorization": f"Bearer {key}"}
    found: set[str] = set()
    letters: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=30, headers=auth) as c:
        while time.perf_counter() - t0 < timeout_s:
            try:
                for sid in load.accepted_good:
                    if sid in found:
                        continue
                    r = c.get(f"/v1/lineage/{sid}")
                    if r.status_code == 200 and r.json()["chunks_now"]:
                        hits = c.get("/v1/search", params=[("q", load.texts[sid]), ("k", "5"),
                                                           ("filter", f"source={sid}")])
                        if hits.status_code == 200 and any(
                                h["source_id"] == sid for h in hits.json()["hits"]):
                            found.add(sid)
                body = c.get("/v1/dlq", params={"limit": 1000}).json()
            except httpx.HTTPError:
                time.sleep(1)
                continue
            letters = {}
            for d in body["letters"]:
                letters[d["key"]] = letters.get(d["key"], 0) + 1
            if len(found) == len(load.accepted_good) and all(
                    s in letters for s in load.accepted_hostile):
                break
            time.sleep(1)
    return found, letters, round(time.perf_counter() - t0, 1)


def main() -> None:
    args = parse_args("chaos: kill -9 of worker, broker and serve under load", extra=_extra)
    seconds = args.seconds or (60.0 if args.quick else 240.0)
    kills = args.kills or (1 if args.quick else 3)
    rng = random.Random(args.seed)
    generator = converted(args.generator) if args.generator == "smollm2" else args.generator
    key = "bench-" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="kinject-chaos-") as tmp:
        data, logs = Path(tmp) / "data", Path(tmp) / "logs"
        logs.mkdir()
        env = {**os.environ, "KINJECT_DATA_DIR": str(data), "KINJECT_API__API_KEY": key,
               "KINJECT_MODELS__EMBEDDER": args.embedder, "KINJECT_MODELS__GENERATOR": generator,
               "KINJECT_INGEST__OCR_ENGINE": "none", "KINJECT_KAFKA__PARTITIONS": "2"}
        env.pop("KINJECT_KAFKA__BOOTSTRAP_SERVERS", None)
        road = Road(data, _free_port(), env, logs)
        progress("starting kinject serve (embedded broker) and kinject worker")
        road.start_serve()
        road.start_worker()
        deadline = time.monotonic() + 300
        while httpx.get(f"{road.url}/readyz", timeout=30).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"serve never became ready; see {logs}")
            time.sleep(0.5)
        rss_start = road.rss_mb()
        rss: list[float] = [rss_start]
        load = Load(road.url, key, rng)
        threads = [threading.Thread(target=load.writer, args=(10,), daemon=True),
                   threading.Thread(target=load.reader, args=("search",), daemon=True),
                   threading.Thread(target=load.reader, args=("ask",), daemon=True)]
        for t in threads:
            t.start()
        events = sorted((rng.uniform(0.1, 0.8) * seconds, what)
                        for what in ("worker", "broker", "serve") for _ in range(kills))
        progress(f"load for {seconds:.0f} s; kills at "
                 + ", ".join(f"{w}@{t:.0f}s" for t, w in events))
        t0 = time.monotonic()
        done: list[str] = []
        while (now := time.monotonic() - t0) < seconds:
            if events and now >= events[0][0]:
                _, what = events.pop(0)
                progress(f"kill -9 {what}")
                road.kill(what)
                done.append(what)
            rss.append(road.rss_mb())
            time.sleep(1.0)
        load.stop.set()
        for t in threads:
            t.join(130)
        progress(f"load over: {len(load.accepted_good)} good and {len(load.accepted_hostile)} "
                 "hostile records accepted; waiting for them to settle")
        found, letters, settle_s = settle(road.url, key, load, 300)
        rss_end = road.rss_mb()
        sigterm_s = road.stop()
    lost = sorted(set(load.accepted_good) - found)
    hostile_ids = set(load.accepted_hostile)
    result = {
        "bench": "chaos",
        "quick": args.quick,
        "seconds": seconds,
        "kills": {w: done.count(w) for w in ("worker", "broker", "serve")},
        "accepted": len(load.accepted_good),
        "searchable": len(found),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "refused": load.refused,
        "unacknowledged": load.unacknowledged,
        "hostile_accepted": len(hostile_ids),
        "dead_letters": sum(1 for s in hostile_ids if s in letters),
        "dead_letter_duplicates": sum(1 for s in hostile_ids if letters.get(s, 0) > 1),
        "dead_letters_missing": sorted(s for s in hostile_ids if s not in letters)[:20],
        "good_in_dlq": sum(1 for s in load.accepted_good if s in letters),
        "search_ok": len(load.latency["search"]),
        "search_p50_s": pct(load.latency["search"], 0.5),
        "search_p95_s": pct(load.latency["search"], 0.95),
        "ask_ok": len(load.latency["ask"]),
        "ask_p50_s": pct(load.latency["ask"], 0.5),
        "ask_p95_s": pct(load.latency["ask"], 0.95),
        "request_failures": load.failures,
        "settle_s": settle_s,
        "sigterm_s": sigterm_s,
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_max": round(max(rss), 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1),
        "embedder": args.embedder,
        "generator": args.generator,
        "env": environment(),
    }
    emit(result)


if __name__ == "__main__":
    main()
