"""`kinject broker` never leaves a Tansu orphan, however the kinject process ends."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from _wait import until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DEADLINE_S = 15.0


def _read_line(proc: subprocess.Popen[bytes], needle: bytes, timeout_s: float) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout_s
    try:
        while needle not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None and not sel.select(0):
                raise AssertionError(f"no {needle!r} line from kinject broker; got {buf!r}")
            if sel.select(min(left, 0.2)):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk and proc.poll() is not None:
                    raise AssertionError(f"kinject broker exited early; stdout {buf!r}")
                buf += chunk
    finally:
        sel.close()
    return buf


def _as_from_a_terminal() -> None:
    """Runs in the child before exec: Ctrl-C reaches a user's foreground process with SIGINT
    at its default, but CI may start the suite as a background job, where SIGINT is inherited
    as ignored (and kinject, like nohup, then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _tansu_child(pid: int, timeout_s: float) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            if child.name() == "tansu":
                return child
        time.sleep(0.05)
    raise AssertionError("kinject broker started no tansu process")


def _dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie waiting for init to reap it (it holds no port and runs nothing)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(
    ("sig", "expected_rc"),
    [
        # Ctrl-C and SIGTERM are how a user stops a foreground server: a clean stop, exit 0.
        (signal.SIGINT, 0),
        (signal.SIGTERM, 0),
        # SIGKILL gives kinject no chance to clean up; the kernel's parent-death signal must.
        (signal.SIGKILL, -signal.SIGKILL),
    ],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_broker_command_leaves_no_tansu_behind(
    sig: signal.Signals, expected_rc: int, tmp_path: Path
) -> None:
    env = dict(os.environ, KINJECT_DATA_DIR=str(tmp_path), KINJECT_LOG_LEVEL="INFO")
    env.pop("KINJECT_KAFKA__BOOTSTRAP_SERVERS", None)
    with (tmp_path / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kinject", "broker", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            preexec_fn=_as_from_a_terminal,
        )
    tansu: psutil.Process | None = None
    try:
        line = _read_line(proc, b"kinject broker listening on 127.0.0.1:", DEADLINE_S)
        port = int(line.split(b"127.0.0.1:")[1].split()[0])
        tansu = _tansu_child(proc.pid, DEADLINE_S)
        assert any(c.laddr.port == port for c in tansu.net_connections(kind="tcp"))

        os.kill(proc.pid, sig)  # kinject alone, not its process group

        rc = proc.wait(timeout=DEADLINE_S)
        until(lambda: _dead(tansu), DEADLINE_S,
              f"tansu pid {tansu.pid} to exit with kinject ({sig!r})")
        assert rc == expected_rc, (tmp_path / "stderr.log").read_text()
    finally:
        if tansu is not None and not _dead(tansu):
            tansu.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_demo_leaves_no_tansu_behind(sig: signal.Signals, tmp_path: Path) -> None:
    env = {**os.environ, "KINJECT_DATA_DIR": str(tmp_path / "data")}
    env.pop("KINJECT_KAFKA__BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen([sys.executable, "-m", "kinject", "demo"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_as_from_a_terminal)
    tansu: psutil.Process | None = None
    try:
        tansu = _tansu_child(proc.pid, timeout_s=60)
        time.sleep(0.5)  # let the demo get on with its work, as a user's Ctrl-C would
        proc.send_signal(sig)
        until(lambda: _dead(tansu), DEADLINE_S,
              f"tansu {tansu.pid} to exit with the demo ({sig.name})")
        proc.wait(timeout=DEADLINE_S)
        assert proc.returncode != 0  # an interrupted demo does not report success
    finally:
        if proc.poll() is None:
            proc.kill()
        if tansu is not None and not _dead(tansu):
            tansu.kill()
