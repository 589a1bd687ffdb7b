"""Audio records: speech (espeak-ng) in WAV, FLAC, Ogg and MP3 becomes text that matches its
script, with the time it was said; broken and oversized recordings are refused with reasons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _speech import (
    FORMATS,
    encode,
    join_wavs,
    needs_espeak,
    silence_wav,
    speak,
    word_error_rate,
)
from kinject.config import load_settings
from kinject.errors import BadRecord, ModelNotFound
from kinject.ingest import whisper_model
from kinject.ingest.audio import MAX_BYTES, MAX_SECONDS, AudioConfig
from kinject.ingest.envelope import decode_record, encode_record
from kinject.ingest.pipeline import IngestConfig, ingest_record
from kinject.ingest.sniff import sniff_kind
from kinject.stream.runner import ingest_config
from kinject.types import Record

pytestmark = [needs_espeak, pytest.mark.slow]

FIRST = ("The library opens early in the morning and closes late in the evening. Visitors "
         "may borrow books and read them in the quiet room upstairs.")
SECOND = "The garden behind the museum has old apple trees and a stone fountain."
PAUSE_S = 4.0
MAX_WER = 0.3


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def talk() -> bytes:
    """FIRST, PAUSE_S seconds of silence, then SECOND."""
    return join_wavs(speak(FIRST), silence_wav(PAUSE_S), speak(SECOND))


def _config(models_dir: Path, model: str = "base", *, max_bytes: int = MAX_BYTES,
            max_seconds: float = MAX_SECONDS) -> IngestConfig:
    return IngestConfig(chunk_size=120, chunk_overlap=10, ocr_engine="none",
                        audio=AudioConfig(model=model, models_dir=models_dir,
                                          max_bytes=max_bytes, max_seconds=max_seconds))


def test_english_speech_becomes_its_script_with_the_times_it_was_said(
        talk: bytes, models_dir: Path) -> None:
    record = Record("meetings/library.wav", content=talk, meta={"filename": "library.wav"})
    got = ingest_record(record, _config(models_dir))  # the multilingual default, base

    transcript = " ".join(c.text for c in got.chunks)
    assert word_error_rate(FIRST + " " + SECOND, transcript) <= MAX_WER, transcript
    assert all(c.kind == "audio" and c.meta["language"] == "en" for c in got.chunks)
    assert {d.lang for d in got.documents} == {"en"}
    # several chunks, in order, each with the span it was said in
    assert len(got.chunks) >= 2
    spans = [(c.meta["start_s"], c.meta["end_s"]) for c in got.chunks]
    assert spans == sorted(spans) and all(0 <= s < e for s, e in spans)
    duration = got.chunks[0].meta["duration_s"]
    assert spans[-1][1] <= duration + 0.5
    # the fountain is mentioned after the pause, and its chunk says so
    fountain = next(c for c in got.chunks if "fountain" in c.text.lower())
    first_ends = next(c for c in got.chunks if "library" in c.text.lower()).meta["end_s"]
    assert fountain.meta["start_s"] >= first_ends
    assert fountain.meta["start_s"] > duration - PAUSE_S - 1
    # assembled once, atomically, and checked: no temporary left behind
    assert (models_dir / whisper_model.BASE_KEY / "model.bin").stat().st_size == \
        whisper_model.BASE_SIZE
    assert sorted(p.name for p in models_dir.iterdir()) == [f".{whisper_model.BASE_KEY}.lock",
                                                            whisper_model.BASE_KEY]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_flac_ogg_and_mp3_are_sniffed_and_transcribed(fmt: str, models_dir: Path) -> None:
    data = encode(speak(FIRST), fmt)
    assert sniff_kind(data) == "audio"  # from the bytes, with no file name
    # kind unset, as a producer that leaves it to kinject sends it, through the envelope
    record = decode_record(encode_record(Record(f"clips/library.{fmt}", content=data)), None)
    assert record.kind is None and record.content == data
    got = ingest_record(record, _config(models_dir, "tiny.en"))
    assert {c.kind for c in got.chunks} == {"audio"}
    assert word_error_rate(FIRST, " ".join(c.text for c in got.chunks)) <= MAX_WER


def test_mp3_without_tags_and_wav_are_sniffed_and_text_is_not() -> None:
    wav = speak("Hello there.")
    mp3 = encode(wav, "mp3")
    assert mp3.startswith(b"ID3")
    frames = mp3[10 + int.from_bytes(bytes(b & 0x7F for b in mp3[6:10]), "big"):]
    assert sniff_kind(wav) == sniff_kind(frames) == "audio"
    assert sniff_kind("Hello there, friend.".encode("utf-16")) == "text"  # FF FE mark
    assert sniff_kind(b"\xff\xd8\xff\xe0JFIF") == "image"


def test_a_cut_short_file_is_refused_with_its_reason(models_dir: Path) -> None:
    flac = encode(speak(FIRST), "flac")
    record = Record("clips/cut.flac", content=flac[: len(flac) // 3])
    with pytest.raises(BadRecord, match=r"cut short.*announces [\d.]+ s, only [\d.]+ s") as info:
        ingest_record(record, _config(models_dir))
    assert info.value.stage == "transcribe"


@pytest.mark.parametrize("header", [b"fLaC", b"OggS", b"ID3\x04\x00\x00\x00\x00\x00\x00",
                                    b"RIFF\x00\x10\x00\x00WAVEfmt "])
def test_garbage_behind_an_audio_header_is_refused(header: bytes, models_dir: Path) -> None:
    record = Record("clips/garbage", content=header + os.urandom(20_000))
    assert sniff_kind(record.content) == "audio"
    with pytest.raises(BadRecord, match="decode") as info:
        ingest_record(record, _config(models_dir))
    assert info.value.stage == "transcribe"


def test_silence_is_refused_as_no_speech(models_dir: Path) -> None:
    with pytest.raises(BadRecord, match=r"no speech was recognised in 5\.0 s"):
        ingest_record(Record("clips/quiet.wav", content=silence_wav(5.0)),
                      _config(models_dir, "tiny.en"))


def test_recordings_over_the_caps_are_refused_before_decoding(models_dir: Path) -> None:
    wav = speak(FIRST)
    with pytest.raises(BadRecord, match="KINJECT_INGEST__AUDIO_MAX_BYTES") as info:
        ingest_record(Record("a.wav", content=wav), _config(models_dir, max_bytes=1000))
    assert info.value.stage == "parse"
    with pytest.raises(BadRecord, match="over the cap of 3 s.*AUDIO_MAX_SECONDS"):
        ingest_record(Record("a.wav", content=wav), _config(models_dir, max_seconds=3.0))


def test_the_settings_reach_the_audio_parser(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, models={"whisper": "tiny.en"},
                             ingest={"audio_max_seconds": 60, "audio_max_bytes": 10_000})
    audio = ingest_config(settings).audio
    assert (audio.model, audio.max_seconds, audio.max_bytes) == ("tiny.en", 60, 10_000)
    assert audio.models_dir == settings.models_dir
    assert load_settings(data_dir=tmp_path).models.whisper == "base"


def test_a_swapped_model_package_is_refused_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whisper_model, "BASE_SHA256", "0" * 64)  # as if a piece were swapped
    with pytest.raises(ModelNotFound, match="not the pinned file"):
        whisper_model.assemble_base(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".{whisper_model.BASE_KEY}.lock"]


def test_a_whisper_setting_that_names_nothing_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="without model.bin"):
        whisper_model.resolve_whisper(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ModelNotFound, match="neither 'base'"):
        whisper_model.resolve_whisper("large", tmp_path)
    assert whisper_model.resolve_whisper("tiny.en", tmp_path).endswith("model")


def test_two_processes_assembling_whisper_base_at_once_both_get_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process (a second ingest worker) renames its assembled copy into place while
    this one is still assembling: this one uses that copy rather than failing the record."""
    import shutil

    pieces = whisper_model.base_pieces()
    if pieces is None:
        pytest.skip("the Whisper base packages are not installed")
    real_pieces = whisper_model.base_pieces

    def other_process_finishes_first() -> tuple[Path, Path, Path] | None:
        other = tmp_path / f".{whisper_model.BASE_KEY}.other.tmp"
        other.mkdir()
        data, one, two = pieces
        with (other / "model.bin").open("wb") as out:
            for part in (one, two):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)
        for name in whisper_model.BASE_FILES:
            shutil.copy2(data / name, other / name)
        os.replace(other, tmp_path / whisper_model.BASE_KEY)
        return real_pieces()

    monkeypatch.setattr(whisper_model, "base_pieces", other_process_finishes_first)
    target = whisper_model.assemble_base(tmp_path)
    assert (target / "model.bin").stat().st_size == whisper_model.BASE_SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{whisper_model.BASE_KEY}.lock",
                                                          whisper_model.BASE_KEY]
