"""Speech made for the audio tests: English read by Debian's espeak-ng, re-encoded with PyAV
(FLAC, Ogg Opus, MP3), and the word (or, for Chinese, character) error rate of a transcript
against its script."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="needs Debian's espeak-ng (apt-get install espeak-ng)")

# (container, codec): what PyAV 18 encodes here. Ogg Vorbis' encoder is "experimental" in
# FFmpeg, so Ogg carries Opus.
FORMATS = {"flac": ("flac", "flac"), "ogg": ("ogg", "libopus"), "mp3": ("mp3", "libmp3lame")}


def speak(text: str) -> bytes:
    """A WAV (22.05 kHz mono) of espeak-ng reading ``text``."""
    return subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True,
                          timeout=60).stdout


def silence_wav(seconds: float, rate: int = 22050) -> bytes:
    return wav_of(np.zeros(int(seconds * rate), np.int16), rate)


def wav_of(samples: np.ndarray, rate: int) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="wav") as dst:
        stream = dst.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def samples_of(wav: bytes) -> tuple[np.ndarray, int]:
    import av

    with av.open(io.BytesIO(wav)) as src:
        stream = src.streams.audio[0]
        parts = [f.to_ndarray().reshape(-1) for f in src.decode(stream)]
        return np.concatenate(parts), stream.rate


def join_wavs(*wavs: bytes) -> bytes:
    """One WAV of the given ones in turn (all at espeak-ng's rate)."""
    pieces = [samples_of(w) for w in wavs]
    return wav_of(np.concatenate([p for p, _ in pieces]), pieces[0][1])


def encode(wav: bytes, fmt: str) -> bytes:
    """``wav`` re-encoded as ``fmt`` (a key of FORMATS) with PyAV."""
    import av

    container, codec = FORMATS[fmt]
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as src, av.open(out, "w", format=container) as dst:
        rate = 48_000 if codec == "libopus" else src.streams.audio[0].rate
        stream = dst.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono",
                                      rate=rate)
        for frame in src.decode(src.streams.audio[0]):
            frame.pts = None
            for piece in resampler.resample(frame):
                for packet in stream.encode(piece):
                    dst.mux(packet)
        for piece in resampler.resample(None):
            for packet in stream.encode(piece):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def _error_rate(ref: list[str], hyp: list[str]) -> float:
    """(substitutions + deletions + insertions) / len(ref), by the edit distance
    (Levenshtein) of the two sequences."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """The word-level error rate, after lower-casing and dropping punctuation."""
    return _error_rate(words(reference), words(hypothesis))


def han_characters(text: str) -> list[str]:
    """The CJK unified ideographs of ``text``, in order (punctuation and spaces dropped)."""
    return re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]", text)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """The character-level error rate over Chinese characters (the usual measure for
    Chinese, which is written without spaces between words)."""
    return _error_rate(han_characters(reference), han_characters(hypothesis))
