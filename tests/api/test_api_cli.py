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
    """... keeps its data private (dir 0700, files 0600) and dumps its threads' stacks on
    SIGUSR1 instead of dying."""
    data = tmp_path / "data"
    env = {**os.environ, "KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KINJECT_KAFKA__TOPIC_PREFIX": "api-cli", "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir), "KINJECT_DATA_DIR": str(data)}
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "kinject", "serve", "--port", "0",
                             "--workers", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)
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

        modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
                 for p in [data, *data.rglob("*")]}
        assert {"data/index/docstore.sqlite", "data/outbox.sqlite3"} <= set(modes), modes
        assert {m for p, m in modes.items() if (tmp_path / p).is_dir()} == {0o700}, modes
        assert {m for p, m in modes.items() if (tmp_path / p).is_file()} == {0o600}, modes

        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        assert proc.poll() is None, "SIGUSR1 killed kinject serve"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert "most recent call first" in (tmp_path / "stderr.log").read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
