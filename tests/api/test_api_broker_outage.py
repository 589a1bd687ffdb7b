"""`kinject serve` outlives its embedded broker: kill -9 of the broker leaves /healthz and
POST /v1/records answering, /readyz says not ready, a supervisor brings the broker back and
what was accepted meanwhile becomes searchable; SIGTERM stops serve even with the broker
dead. And a batch with one bad record is refused whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from _api_helpers import Served, publish
from fastapi.testclient import TestClient

from _wait import until
from kinject.api.auth import KEYS_FILE, KeyStore

pytestmark = pytest.mark.kafka


def _tansu(serve: subprocess.Popen[str]) -> tuple[psutil.Process, int]:
    """The embedded broker of a serve process, and its port."""
    for child in psutil.Process(serve.pid).children(recursive=True):
        argv = child.cmdline()
        if argv and argv[0].endswith("tansu"):
            url = argv[argv.index("--listener-url") + 1]
            return child, int(url.rsplit(":", 1)[1])
    raise AssertionError("serve runs no embedded broker")


@contextmanager
def _squat(port: int) -> Iterator[None]:
    """Hold the broker's port (accepting and dropping connections), so it cannot come back
    until the block ends: the outage lasts as long as the test needs it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.settimeout(0.1)
    done = threading.Event()

    def drop() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
        sock.close()


def _kill_broker(serve: subprocess.Popen[str]) -> int:
    proc, port = _tansu(serve)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return port


@pytest.mark.slow
def test_serve_outlives_its_broker(tmp_path: Path, tiny_lm_dir: Path) -> None:
    data = tmp_path / "data"
    key = KeyStore(data / KEYS_FILE).create("writer", "write")[1]
    env = {**os.environ, "KINJECT_DATA_DIR": str(data), "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir), "KINJECT_INGEST__OCR_ENGINE": "none",
           "KINJECT_KAFKA__PARTITIONS": "1", "KINJECT_KAFKA__SESSION_TIMEOUT_MS": "2000",
           "KINJECT_KAFKA__HEARTBEAT_INTERVAL_MS": "500"}
    env.pop("KINJECT_KAFKA__BOOTSTRAP_SERVERS", None)
    serve = subprocess.Popen([sys.executable, "-m", "kinject", "serve", "--port", "0"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(serve.stderr or ()), daemon=True).start()
    try:
        line = serve.stdout.readline() if serve.stdout else ""
        assert "serving on" in line, "".join(err)[-3000:]
        url = line.rsplit(" ", 1)[1].strip()
        # Hang guards only (no timing asserted): a request that does not answer fails.
        client = httpx.Client(base_url=url, timeout=15,
                              headers={"Authorization": f"Bearer {key}"})

        def ready() -> tuple[int, dict[str, Any]]:
            r = client.get("/readyz")
            return r.status_code, r.json()

        def found(sid: str) -> bool:
            hits = client.get("/v1/search", params={"q": f"ferry {sid}", "k": 20}).json()
            return any(h["source_id"] == sid for h in hits["hits"])

        def post(*sids: str) -> httpx.Response:
            return client.post("/v1/records", json={"records": [
                {"source_id": s, "content": f"The ferry {s} leaves at nine."} for s in sids]})

        until(lambda: ready()[0] == 200, 120, "serve ready")
        assert post("before").status_code == 202
        until(lambda: found("before"), 60, "the first record searchable")

        port = _kill_broker(serve)
        with _squat(port):
            assert client.get("/healthz").json() == {"status": "ok"}
            code, body = until(lambda: (s := ready())[0] == 503 and s, 30,
                               "/readyz to say not ready")
            assert body["checks"]["broker_ok"] is False
            assert body["checks"]["embedded_broker"]["running"] is False
            during = [f"during-{i}" for i in range(5)]
            for sid in during:  # accepted into the outbox without waiting on the broker
                r = post(sid)
                assert r.status_code == 202, r.text
            assert client.get("/healthz").status_code == 200
            assert found("before")  # searching never needed the broker
        # The port is free again: the supervisor restarts the broker there, the outbox
        # keeper re-sends what the new (empty) broker lacks, and the road re-reads it.
        for sid in during:
            until(lambda sid=sid: found(sid), 120, f"{sid} searchable after the restart")
        code, body = until(lambda: (s := ready())[0] == 200 and s, 60, "ready again")
        assert body["checks"]["embedded_broker"]["restarts"] >= 1

        # SIGTERM with the broker dead (and kept dead): serve still stops, cleanly.
        port = _kill_broker(serve)
        with _squat(port):
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(30) == 0, "".join(err)[-3000:]
        client.close()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)


def test_a_batch_with_one_bad_record_is_refused_whole(served: Served) -> None:
    big = "x" * (11 * 1024 * 1024)  # over the 10 MB record limit, under the body limit
    with served.client("write") as c:
        r = c.post("/v1/records", json={"records": [
            {"source_id": "batch/first", "content": "Otters swim in the Brinmoor canal."},
            {"source_id": "batch/huge", "content": big},
            {"source_id": "batch/last", "content": "Otters sleep under the Brinmoor bridge."},
        ]})
    assert r.status_code == 400, r.text
    assert "batch/huge" in r.json()["error"]["message"]
    # One partition: had anything of the batch been published, it would be ingested before
    # this marker, which is published after it.
    publish(served, {"source_id": "batch/marker", "content": "Otters eat Brinmoor eels."})
    with served.client() as c:
        until(lambda: any(h["source_id"] == "batch/marker" for h in c.get(
            "/v1/search", params={"q": "Brinmoor otters", "k": 10}).json()["hits"]),
            what="the marker searchable")
        for sid in ("batch/first", "batch/huge", "batch/last"):
            assert c.get(f"/v1/lineage/{sid}").status_code == 404


def test_a_full_outbox_answers_503_with_retry_after(tmp_path: Path, kafka_bootstrap: str,
                                                    tiny_lm_dir: Path) -> None:
    from _api_helpers import make_settings

    from kinject.api.app import create_app
    from kinject.service import KinjectService
    from kinject.stream.topics import ensure_topics

    settings = make_settings(tmp_path, kafka_bootstrap, tiny_lm_dir, max_outbox_records=3)
    ensure_topics(settings.kafka, kafka_bootstrap)
    key = KeyStore(tmp_path / KEYS_FILE).create("writer", "write")[1]
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        svc.attach(kafka_bootstrap)  # no worker: nothing confirms what the outbox holds
        auth = {"Authorization": f"Bearer {key}"}

        def post(*sids: str) -> Any:
            return client.post("/v1/records", headers=auth, json={"records": [
                {"source_id": s, "content": "Wrens sing."} for s in sids]})

        assert post("a", "b").status_code == 202
        full = post("c", "d")
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "unavailable"
        assert int(full.headers["Retry-After"]) > 0
        assert post("c").status_code == 202  # what fits is still taken
        assert len(svc.broker.outbox) == 3


def test_the_outbox_keeper_is_reported_and_stops_before_its_outbox_closes(
        tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """/readyz and /metrics say whether the keeper runs (it delivers every accepted record);
    shutting down stops it, after its last round, before the outbox and producer close."""
    import logging
    import time

    from _api_helpers import make_settings

    from kinject.api.app import create_app
    from kinject.service import KinjectService
    from kinject.stream.topics import ensure_topics
    from kinject.types import Record

    settings = make_settings(tmp_path, kafka_bootstrap, tiny_lm_dir)
    ensure_topics(settings.kafka, kafka_bootstrap)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="kinject.stream.outbox_keeper")
    with KinjectService(settings) as svc, TestClient(create_app(svc)) as client:
        svc.attach(kafka_bootstrap)
        keeper = svc.outbox_keeper(0.2)
        thread = keeper.start(stop)
        svc.publish([Record("k/1", kind="text", content=b"Wrens sing at dawn.")])
        deadline = time.monotonic() + 30
        while keeper.stats.delivered + keeper.stats.resent < 1:
            assert time.monotonic() < deadline, "the keeper delivered nothing"
            time.sleep(0.05)
        checks = client.get("/readyz").json()["checks"]
        assert checks["outbox_keeper"]["running"] is True
        assert checks["outbox_keeper"]["errors"] == 0
        assert "kinject_outbox_keeper_up 1.0" in client.get("/metrics").text
        before = time.time()
        svc.detach()  # what `kinject serve` does on its way out (KinjectService.close)
        assert not thread.is_alive()  # stopped, not left running on a closed outbox
        last = keeper.stats.last_round_at
        assert last is not None and last >= before  # its last round ran on the open outbox
        assert keeper.stats.errors == 0
    stop.set()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
