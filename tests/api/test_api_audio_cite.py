"""A recording published on Kafka becomes a cited answer with its time in the recording: a
real `kinject serve` transcribes it (Whisper base), indexes it, and answers /v1/ask with the
reader model (read mode, the default), citing where in the recording the answer was said;
`kinject ask` prints that time."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from _serve import start_serve, wait_ready
from _speech import encode, join_wavs, needs_espeak, samples_of, silence_wav, speak
from _wait import until
from kinject.cli import app
from kinject.config import load_settings
from kinject.ingest.envelope import encode_record
from kinject.stream.clients import make_producer
from kinject.stream.topics import Topics
from kinject.types import Record

pytestmark = [pytest.mark.kafka, pytest.mark.slow, needs_espeak]

OPENING = "Welcome everyone. Today we talk about the new bicycle lanes in the city centre."
LATER = "The harbour ferry will stop running on Sundays during the winter."
PAUSE_S = 3.0
QUESTION = "On which day will the harbour ferry stop running?"


def _seconds(wav: bytes) -> float:
    samples, rate = samples_of(wav)
    return len(samples) / rate


def test_an_answer_from_a_recording_cites_when_it_was_said(
        tmp_path: Path, kafka_bootstrap: str, tiny_lm_dir: Path, reader_cache: Path) -> None:
    opening, later = speak(OPENING), speak(LATER)
    opening_end = _seconds(opening)
    said_from = opening_end + PAUSE_S  # when LATER starts
    said_to = said_from + _seconds(later)
    talk = encode(join_wavs(opening, silence_wav(PAUSE_S), later), "mp3")

    # Chunks of about a sentence (the default 400 characters would hold both facts in one).
    settings = load_settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 1,
               "topic_prefix": f"audio-{uuid.uuid4().hex[:8]}"},
        models={"embedder": "hash", "generator": str(tiny_lm_dir),
                "cache_dir": str(reader_cache)},
        ingest={"chunk_size": 100, "chunk_overlap": 10})
    url, stop, thread = start_serve(settings)
    try:
        wait_ready(url, timeout_s=180)
        producer = make_producer(settings.kafka, kafka_bootstrap)
        producer.send(Topics.from_settings(settings.kafka).records,
                      key=b"meetings/transport.mp3",
                      value=encode_record(Record("meetings/transport.mp3", content=talk)))
        producer.flush()
        producer.close()
        with httpx.Client(base_url=url, timeout=300) as c:
            until(lambda: c.get("/v1/status").json()["index_chunks"] >= 2, timeout_s=300,
                  what="both sentences of the recording in the index")
            answer = c.post("/v1/ask", json={"question": QUESTION}).json()
            streamed = [json.loads(line[len("data: "):])
                        for line in c.post("/v1/ask", json={"question": QUESTION,
                                                            "stream": True}).text.splitlines()
                        if line.startswith("data: {")]
            chat = c.post("/v1/chat/completions", json={
                "model": "kinject", "messages": [{"role": "user", "content": QUESTION}]}).json()
    finally:
        stop.set()
        thread.join(60)

    assert not answer["abstained"] and "sunday" in answer["text"].lower(), answer
    cite = answer["citations"][0]
    assert cite["source_id"] == "meetings/transport.mp3" and cite["page"] is None
    # the span covers the ferry sentence and not the opening one (Whisper base's times were
    # within 0.25 s here: 7.81-10.93 s for 7.83-11.15 s)
    assert opening_end < cite["start_s"] <= said_from + 0.5, (cite, opening_end, said_from)
    assert said_to - 0.5 <= cite["end_s"] <= said_to + 1.0, (cite, said_to)
    # the same place in the stream's final event and in the OpenAI-compatible citations
    final = streamed[-1]
    assert final["type"] == "answer"
    assert (final["citations"][0]["start_s"], final["citations"][0]["end_s"]) == (
        cite["start_s"], cite["end_s"])
    assert (chat["citations"][0]["start_s"], chat["citations"][0]["end_s"]) == (
        cite["start_s"], cite["end_s"])

    # `kinject ask` on the same data dir prints where in the recording
    env = {"KINJECT_MODELS__EMBEDDER": "hash", "KINJECT_MODELS__GENERATOR": str(tiny_lm_dir),
           "KINJECT_MODELS__CACHE_DIR": str(reader_cache)}
    out = CliRunner().invoke(app, ["ask", QUESTION, "--no-sync", "--data-dir", str(tmp_path)],
                             env=env)
    assert out.exit_code == 0, out.output
    start, end = int(cite["start_s"]), -int(-cite["end_s"] // 1)
    assert f"[1] meetings/transport.mp3 at 0:{start:02d}-0:{end:02d}" in out.output, out.output
