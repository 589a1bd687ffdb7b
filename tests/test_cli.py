import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinject.cli import app

runner = CliRunner()


def _kinject(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kinject", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_commands_without_importing_torch() -> None:
    probe = ("import sys; from typer.testing import CliRunner; from kinject.cli import app; "
             "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
             "heavy = [m for m in ('torch', 'transformers', 'faiss', 'sentence_transformers')"
             " if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    result = runner.invoke(app, ["--help"])
    for command in ("demo", "doctor", "broker", "worker", "publish", "dlq"):
        assert command in result.output


def test_version() -> None:
    from kinject import __version__

    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_doctor_reports_every_component(tmp_path: Path) -> None:
    result = _kinject("doctor", env={"KINJECT_DATA_DIR": str(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    for component in ("data dir", "embedder", "generator", "reader", "kafka", "OCR rapidocr",
                      "OCR tesseract", "CLIP image index", "speech to text", "accelerator",
                      "API server"):
        assert component in result.stdout, component


def test_doctor_says_where_the_reader_is_cached_and_when_it_will_be_converted(
        tmp_path: Path, reader_cache: Path) -> None:
    env = {"KINJECT_DATA_DIR": str(tmp_path), "COLUMNS": "400"}
    cached = _kinject("doctor", env=env)  # the shared cache of the test session
    assert f"cached at {reader_cache}" in cached.stdout.replace("\n", "")
    fresh = _kinject("doctor", env={**env, "KINJECT_MODELS__CACHE_DIR": str(tmp_path / "c")})
    assert "converted on first use" in fresh.stdout.replace("\n", "")


def test_doctor_fails_and_names_the_setting_for_a_missing_model(tmp_path: Path) -> None:
    result = _kinject("doctor", env={"KINJECT_DATA_DIR": str(tmp_path), "COLUMNS": "250",
                                     "KINJECT_MODELS__GENERATOR": str(tmp_path / "no-model")})
    assert result.returncode == 1
    assert "KINJECT_MODELS__GENERATOR" in result.stdout.replace("\n", "")


def test_bad_config_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["doctor", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


@pytest.mark.kafka
def test_broker_command_refuses_a_port_in_use(tmp_path: Path, kafka_bootstrap: str) -> None:
    port = kafka_bootstrap.rsplit(":", 1)[1]
    result = _kinject("broker", "--port", port, env={"KINJECT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "in use" in result.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_command_ingests_and_stops_cleanly_on_sigterm(tmp_path: Path,
                                                            kafka_bootstrap: str) -> None:
    import json
    import signal

    from kinject.config import KafkaSettings
    from kinject.ingest.envelope import encode_record
    from kinject.stream.clients import make_consumer, make_producer
    from kinject.stream.topics import Topics, ensure_topics
    from kinject.types import Record

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix="cliworker")
    topics = ensure_topics(kafka, kafka_bootstrap)
    env = {**os.environ, "KINJECT_DATA_DIR": str(tmp_path),
           "KINJECT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KINJECT_KAFKA__TOPIC_PREFIX": "cliworker", "KINJECT_MODELS__EMBEDDER": "hash",
           "KINJECT_INGEST__OCR_ENGINE": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "kinject", "worker", "-n", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        producer = make_producer(kafka, kafka_bootstrap)
        producer.send(topics.records, key=b"kb/x", value=encode_record(
            Record(source_id="kb/x", kind="text", content=b"Gulls nest on Brinmoor.")))
        producer.flush()
        producer.close()
        chunks = make_consumer(kafka, kafka_bootstrap, None, [Topics.from_prefix(
            "cliworker").chunks], consumer_timeout_ms=60000)
        event = json.loads(next(iter(chunks)).value)
        chunks.close()
        assert event["source_id"] == "kb/x" and event["chunks"][0]["text"].startswith("Gulls")
        # the worker also fills the fine-tuning corpus of its data dir
        # (group cliworker-corpus-<store id>)
        from kinject.finetune.corpus import CorpusStore
        from kinject.finetune.jobs import corpus_path

        deadline = time.monotonic() + 60
        while not corpus_path(tmp_path).is_file():
            assert time.monotonic() < deadline, "the worker did not open the corpus"
            time.sleep(0.2)
        with CorpusStore(corpus_path(tmp_path)) as corpus:
            while corpus.sources() != {"kb/x"}:
                assert time.monotonic() < deadline, "the worker did not fill the corpus"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert "1 records processed" in err
    finally:
        if proc.poll() is None:
            proc.kill()
