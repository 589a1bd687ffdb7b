"""The child process that reads records under a time budget: a hard stop at the budget, a
crash that names itself, signals meant for the parent that leave it alone."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from _held_records import PROGRESS_S, PROGRESSED, WAIT_FOR

from kinject.errors import BadRecord
from kinject.ingest.pipeline import IngestConfig
from kinject.ingest.uris import UriPolicy
from kinject.stream.ingest_process import IngestProcess, RecordTimeout
from kinject.types import Record, content_hash

QUICK = Record("note/1", kind="text", content=b"The ferry to Skerra leaves at nine.")


def _held(gate: Path) -> Record:
    """A page the child reads only once ``gate`` exists (never, if no one creates it):
    slower than any budget by construction, whatever the machine."""
    return Record("web/lamp", kind="html",
                  content=b"<html><body><p>The lamp of Gullspire is lit at dusk.</p></body></html>",
                  meta={WAIT_FOR: str(gate)})


@pytest.fixture()
def child(held_records: None) -> Iterator[IngestProcess]:
    proc = IngestProcess(IngestConfig(ocr_engine="none"), timeout_s=60.0,
                         keepalive_every_s=0.1)
    yield proc
    proc.close()


def test_a_record_over_the_budget_is_stopped_and_the_next_one_is_read(
        child: IngestProcess, tmp_path: Path) -> None:
    child.timeout_s = 0.3
    child.start()
    first = child.pid
    with pytest.raises(RecordTimeout, match="time budget of 0.3 s") as info:
        child.run(_held(tmp_path / "never"))
    assert info.value.stage == "ingest" and child.killed == 1
    assert first is not None and not _alive(first)  # stopped hard, not left running
    child.timeout_s = 60.0
    assert "ferry to Skerra" in child.run(QUICK).chunks[0].text
    assert child.started == 2


def test_a_record_that_reports_progress_gets_a_fresh_budget_until_it_stalls(
        child: IngestProcess, tmp_path: Path) -> None:
    # A long recording reports each piece of its transcript: it is not stopped while it
    # advances (4 s of progress against a budget of 2 s), and is stopped once it stalls.
    child.timeout_s = 2.0
    record = Record("talks/long.wav", kind="text", content=b"The talk ends at noon.",
                    meta={PROGRESS_S: 4.0, PROGRESSED: str(tmp_path / "advanced"),
                          WAIT_FOR: str(tmp_path / "never")})
    with pytest.raises(RecordTimeout):
        child.run(record)
    assert (tmp_path / "advanced").exists() and child.killed == 1


def test_a_child_that_dies_mid_record_makes_a_bad_record_naming_the_signal(
        child: IngestProcess, tmp_path: Path) -> None:
    child.start()
    pid = child.pid
    assert pid is not None

    def kill() -> None:  # the kernel's out-of-memory killer, say
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(BadRecord, match="died while reading the record \\(killed by signal 9"):
        child.run(_held(tmp_path / "never"), keepalive=kill)
    assert "ferry to Skerra" in child.run(QUICK).chunks[0].text


def test_ctrl_c_and_sigterm_reach_the_parent_only(child: IngestProcess, tmp_path: Path
                                                  ) -> None:
    """A terminal's Ctrl-C (or a service manager's TERM) goes to the whole process group;
    the worker finishes its batch, so the record being read must not die with it."""
    child.start()
    pid = child.pid
    assert pid is not None
    sent: list[int] = []
    gate = tmp_path / "gate"

    def interrupt() -> None:  # the record is held until both signals have reached the child
        for sig in (signal.SIGINT, signal.SIGTERM):
            if sig not in sent:
                os.kill(pid, sig)
                sent.append(sig)
                return
        gate.touch()

    out = child.run(_held(gate), keepalive=interrupt)
    assert sent == [signal.SIGINT, signal.SIGTERM]
    assert "lamp of Gullspire" in "\n".join(c.text for c in out.chunks)
    assert child.pid == pid and child.started == 1


def test_errors_of_the_record_come_back_with_their_stage(child: IngestProcess) -> None:
    with pytest.raises(BadRecord, match="json is malformed") as info:
        child.run(Record("bad/json", kind="json", content=b'{"a":'))
    assert info.value.stage == "parse"
    assert child.started == 1  # a bad record is no reason for a new child


def test_the_child_is_the_one_the_out_of_memory_killer_picks(child: IngestProcess) -> None:
    """A hostile record that eats memory must cost the child, not the worker beside it."""
    child.start()
    proc = f"/proc/{child.pid}/oom_score_adj"
    if not os.path.exists(proc):
        pytest.skip("no /proc oom_score_adj on this platform")
    with open(proc) as f:
        assert f.read().strip() == "1000"
    with open("/proc/self/oom_score_adj") as f:
        assert f.read().strip() != "1000"  # the parent keeps its own


def test_a_uri_is_read_in_the_child(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("The ferry to Skerra leaves at nine.")
    os.mkfifo(tmp_path / "pipe.txt")
    proc = IngestProcess(IngestConfig(ocr_engine="none", uris=UriPolicy(dirs=(tmp_path,))),
                         timeout_s=60.0, keepalive_every_s=0.1)
    try:
        out, digest = proc.run_uri(Record("note/1"), str(tmp_path / "note.txt"))
        assert "ferry to Skerra" in out.chunks[0].text
        assert out.chunks[0].meta.get("filename") == "note.txt"
        assert digest == content_hash(b"The ferry to Skerra leaves at nine.")
        with pytest.raises(BadRecord, match="not a regular file") as info:
            proc.run_uri(Record("pipe/1"), str(tmp_path / "pipe.txt"))
        assert info.value.stage == "fetch"
        with pytest.raises(BadRecord, match="outside the allowed") as info:
            proc.run_uri(Record("etc/1"), "/etc/hostname")
        assert info.value.stage == "validate" and proc.started == 1
    finally:
        proc.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_record_that_reports_progress_still_keeps_the_worker_in_its_group(
        held_records: None) -> None:
    """Progress arriving more often than the keepalive period must not starve the keepalive
    (the worker's poll that keeps it in the consumer group during a long recording)."""
    proc = IngestProcess(IngestConfig(ocr_engine="none"), timeout_s=60.0,
                         keepalive_every_s=1.5)
    calls: list[float] = []
    try:
        proc.start()
        record = Record("talks/long.wav", kind="text", content=b"The talk ends at noon.",
                        meta={PROGRESS_S: 6.0})
        assert "noon" in proc.run(record, keepalive=lambda: calls.append(1.0)).chunks[0].text
    finally:
        proc.close()
    assert len(calls) >= 2  # about one per 1.5 s over 6 s of progress
