"""Audio (wav, mp3, ogg, flac): speech to text with faster-whisper, timestamps kept.

A recording becomes Documents of consecutive Whisper segments, each at most about one chunk
long, so each chunk carries the time span it was said in (``meta["start_s"]``,
``meta["end_s"]``, seconds from the start) and a citation can say where in the recording.
The spoken language is detected (``meta["language"]``, Whisper's code: ``"en"``, ``"zh"``...).

Every recording passes cheap checks first: its size (``max_bytes``) before anything is read,
its duration from the container's header (``max_seconds``) before anything is decoded; one
whose container gives no duration is decoded only up to ``max_seconds``. Bytes that do not
decode, a file cut short (a header that announces more than decodes) and a recording in
which nothing is recognised raise BadRecord with the reason: the worker dead-letters them.

Whisper yields segments lazily, about one per sentence: each is logged as progress, and
:data:`progress_hook` (set by the ingest child process) is told, so a long recording that
advances is not taken for a stuck one (``kinject.stream.ingest_process``).
"""

from __future__ import annotations

import io
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinject.config import default_data_dir
from kinject.errors import BadRecord
from kinject.ingest.parsers import doc_id
from kinject.types import Document, Record

log = logging.getLogger(__name__)

# 512 MiB: a two-hour MP3 at 320 kbit/s is 290 MB and a two-hour 16 kHz mono WAV 230 MB; an
# uncompressed CD-quality WAV of a long meeting is over it (compress it first).
MAX_BYTES = 512 * 1024 * 1024
# Two hours: a long meeting. The whole recording is decoded into memory at 16 kHz float32
# (230 MB an hour), and Whisper base reads about 2.7 s of speech a second on 2 busy cores
# (bench/ingest.py), so the cap bounds both memory and time.
MAX_SECONDS = 7200.0
SAMPLE_RATE = 16_000
# A header announcing this much more than decodes means the file was cut short.
_TRUNCATED_SLACK_S = 1.0
_TRUNCATED_SHARE = 0.05
# Progress is logged at most this often (seconds of wall time).
_LOG_EVERY_S = 10.0

# Called as ``hook(seconds transcribed, seconds in the recording)`` after each segment; the
# ingest child process sets it to renew the record's time budget while transcription advances.
progress_hook: Callable[[float, float], None] | None = None


@dataclass(frozen=True)
class AudioConfig:
    """How recordings are read: the Whisper model and the caps against poison pills."""

    model: str = "base"
    # Where the base model is assembled once (Settings.models_dir in the workers).
    models_dir: Path = field(default_factory=lambda: default_data_dir() / "models")
    max_bytes: int = MAX_BYTES
    max_seconds: float = MAX_SECONDS
    threads: int = 0  # CTranslate2's default (one per core)

    def __post_init__(self) -> None:
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, got {self.max_bytes!r}")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds!r}")


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


def parse_audio(record: Record, config: AudioConfig, max_chars: int = 400) -> list[Document]:
    """Documents of the speech in ``record``: runs of segments up to ``max_chars`` characters,
    each with its ``start_s``/``end_s`` and the recording's ``language`` in its meta."""
    from kinject.ingest.whisper_model import load_whisper

    samples, declared = decode(record.content, config)
    duration = len(samples) / SAMPLE_RATE
    model = load_whisper(config.model, config.models_dir, config.threads)
    segments, info = transcribe(model, samples, record.source_id)
    if not segments:
        raise BadRecord(f"no speech was recognised in {duration:.1f} s of audio",
                        stage="transcribe")
    title = str(record.meta.get("title") or record.meta.get("filename") or "")
    base = {**record.meta, "unit": "speech", "duration_s": round(duration, 2),
            "language": info.language,
            "language_probability": round(float(info.language_probability), 3)}
    if declared is not None:
        base["declared_duration_s"] = round(declared, 2)
    docs = []
    for n, run in enumerate(group_segments(segments, max_chars)):
        text = " ".join(s.text for s in run)
        start, end = run[0].start, run[-1].end
        docs.append(Document(doc_id(record.source_id, f"t{n}"), record.source_id, text,
                             "audio", title=title,
                             meta={**base, "start_s": round(start, 2), "end_s": round(end, 2)}))
    return docs


def decode(data: bytes, config: AudioConfig) -> tuple[Any, float | None]:
    """16 kHz mono float32 samples of ``data``, and the duration its header announces.

    BadRecord(stage="parse") over a cap; BadRecord(stage="transcribe") when the bytes do not
    decode, decode to nothing, or decode to much less than the header announces.
    """
    import av

    if len(data) > config.max_bytes:
        raise BadRecord(f"audio of {len(data):,} bytes is over the cap of {config.max_bytes:,} "
                        "bytes (KINJECT_INGEST__AUDIO_MAX_BYTES)", stage="parse")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise BadRecord(f"the {container.format.name} file has no audio stream",
                                stage="transcribe")
            declared = container.duration / 1e6 if container.duration else None
            fmt = container.format.name
    except av.FFmpegError as exc:
        raise BadRecord(f"cannot decode audio: {exc}", stage="transcribe") from exc
    if declared is not None and declared > config.max_seconds:
        raise BadRecord(f"audio of {declared:,.0f} s is over the cap of "
                        f"{config.max_seconds:,.0f} s (KINJECT_INGEST__AUDIO_MAX_SECONDS)",
                        stage="parse")
    try:
        samples = decode_capped(data, config.max_seconds)
    except (av.FFmpegError, ValueError, RuntimeError) as exc:
        raise BadRecord(f"cannot decode audio ({fmt}): {exc}", stage="transcribe") from exc
    got = len(samples) / SAMPLE_RATE
    if got == 0:
        raise BadRecord(f"the {fmt} file holds no audio that decodes (broken or empty)",
                        stage="transcribe")
    if declared is not None and declared - got > max(_TRUNCATED_SLACK_S,
                                                     _TRUNCATED_SHARE * declared):
        raise BadRecord(f"the {fmt} file is cut short or damaged: its header announces "
                        f"{declared:.1f} s, only {got:.1f} s decode", stage="transcribe")
    return samples, declared


def decode_capped(data: bytes, max_seconds: float) -> Any:
    """16 kHz mono float32 samples of ``data``, decoded frame by frame (as faster-whisper's
    ``decode_audio`` does, undecodable frames skipped), stopped with BadRecord(stage="parse")
    as soon as they pass ``max_seconds``: a header that gave no duration, or a wrong one,
    never gets a long stream decoded whole into memory."""
    import gc

    import av
    import numpy as np

    limit = int(max_seconds * SAMPLE_RATE)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    parts: list[Any] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            for frame in itertools.chain(_decodable(container.decode(audio=0)), [None]):
                if frame is not None:
                    frame.pts = None  # the resampler's timestamp check: not ours to make
                for out in resampler.resample(frame):
                    part = out.to_ndarray().reshape(-1)
                    total += len(part)
                    if total > limit:
                        raise BadRecord(
                            f"audio is over the cap of {max_seconds:,.0f} s (decoding stopped "
                            "there; its header gives no duration or a shorter one) "
                            "(KINJECT_INGEST__AUDIO_MAX_SECONDS)", stage="parse")
                    parts.append(part)
    finally:
        # PyAV's resampler holds memory until the garbage collector runs (faster-whisper
        # issue 390): a worker reading recordings all day must not keep it.
        del resampler
        gc.collect()
    if not parts:
        return np.zeros(0, np.float32)
    return np.concatenate(parts).astype(np.float32) / 32768.0


def _decodable(frames: Iterator[Any]) -> Iterator[Any]:
    """The frames that decode; a damaged one is skipped, as faster-whisper does."""
    import av

    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue


def transcribe(model: Any, samples: Any, source_id: str) -> tuple[list[Segment], Any]:
    """Whisper's segments (text stripped, empty ones dropped) and its info (language...),
    with progress logged and reported to :data:`progress_hook` segment by segment."""
    duration = len(samples) / SAMPLE_RATE
    started = last_log = time.monotonic()
    # VAD skips silence (and noise) before Whisper sees it: fewer hallucinated lines and
    # less work; Silero's ONNX model ships inside faster-whisper.
    lazy, info = model.transcribe(samples, beam_size=1, vad_filter=True,
                                  condition_on_previous_text=False)
    segments = []
    for seg in _guarded(lazy):
        text = seg.text.strip()
        if text:
            segments.append(Segment(float(seg.start), float(seg.end), text))
        if progress_hook is not None:
            progress_hook(float(seg.end), duration)
        now = time.monotonic()
        if now - last_log >= _LOG_EVERY_S:
            last_log = now
            log.info("transcribing %s: %.0f of %.0f s (%.1f s of audio per second)", source_id,
                     seg.end, duration, seg.end / max(now - started, 1e-6))
    took = time.monotonic() - started
    log.info("transcribed %s: %.1f s of %s speech in %.1f s, %d segments", source_id, duration,
             info.language, took, len(segments))
    return segments, info


def _guarded(lazy: Iterable[Any]) -> Iterable[Any]:
    """The segments; a decoder or model failure midway becomes a BadRecord."""
    try:
        yield from lazy
    except (RuntimeError, ValueError) as exc:
        raise BadRecord(f"speech recognition failed: {exc}", stage="transcribe") from exc


def group_segments(segments: list[Segment], max_chars: int) -> list[list[Segment]]:
    """Consecutive segments joined while their text stays within ``max_chars`` (a segment
    longer than that stands alone)."""
    runs: list[list[Segment]] = []
    size = 0
    for seg in segments:
        if runs and size + 1 + len(seg.text) <= max_chars:
            runs[-1].append(seg)
            size += 1 + len(seg.text)
        else:
            runs.append([seg])
            size = len(seg.text)
    return runs
