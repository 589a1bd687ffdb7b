"""`kinject serve` and `kinject keys` from the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kinject.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--name", "ci", "--role", "write",
                               "--data-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    assert key.startswith("kj_")
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert "ci" in listed.stdout and "write" in listed.stdout and key not in listed.stdout
    assert key not in (tmp_path / "api_keys.json").read_text()
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--role", "root",
                              "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2
    gone = runner.invoke(app, ["keys", "revoke", "ci", "--data-dir", str(tmp_path)])
    assert gone.exit_code == 0 and "revoked 1" in gone.stdout
    again = runner.invoke(app, ["keys", "revoke", "ci", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1


def test_compose_api_command_is_a_real_serve_command() -> None:
    import typer.main

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    argv = compose["services"]["api"]["command"]
    group = typer.main.get_command(app)
    command = group.get_command(None, argv[0])  # type: ignore[attr-defined, arg-type]
    assert command is not None
    ctx = command.make_context(argv[0], list(argv[1:]))
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["workers"] == 0


@pytest.mark.kafka
@pytest.mark.slow
def test_serve_runs_a_read_replica_and_stops_on_sigterm(tmp_path: Path, kafka_bootstrap: str,
                                                       tiny_lm_dir: Path) -> None:
    env = {**os.environ, "KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KINJECT_KAFKA__TOPIC_PREFIX": "api-cli", "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir), "KINJECT_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "kinject", "serve", "--port", "0",
                             "--workers", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kinject serving on http://127.0.0.1:"), line
        url = line.split()[-1]
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.3)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
